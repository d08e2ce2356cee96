"""Fuzz: 1,200 malformed, unauthorised, replayed and misaddressed commands while parts run.

The agent must keep inspecting every part, answer every command that has a reply address
with an error, actuate nothing a command asked for, and keep its memory flat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.control.auth import generate_keypair, load_private_key
from agent.control.ctl import build_request
from hw_sim.conveyor import BeltSettings
from hw_sim.harness import DEVICE_ID, LINE, REJECT_PIN, CellSettings, SimulatedCell

pytestmark = pytest.mark.timeout(300)
BASE = f"edge/{DEVICE_ID}"
REPLY_TOPIC = f"{BASE}/replies/fuzz"
ERROR_CODES = {"bad_json", "bad_request", "too_large", "unknown_command", "unsigned", "bad_signature", "expired",
               "not_yet_valid", "replayed", "busy", "invalid_config", "unknown_line"}


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _rising_edges(pin) -> int:
    return sum(1 for before, after in zip(pin.states, pin.states[1:]) if after.state and not before.state)


def malformed(rng: random.Random, key, stale_ping: dict):
    """(topic, payload, retain, expects_reply) for one bad command."""
    kind = rng.randrange(12)
    if kind == 0:  # not JSON
        return f"{BASE}/cmd/ping", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), False, True
    if kind == 1:  # JSON, wrong shape or types
        body = rng.choice([[], "x", 1, None, {"args": "x"}, {"cmd_id": 5}, {"issued_at": "now"}, {"args": {"line": 3}},
                           {"request_id": {"a": 1}}, {"sig": 7}, {"reply_to": ""}, {"extra": True}])
        return f"{BASE}/cmd/{rng.choice(['line/pause', 'trigger', 'thresholds/set'])}", json.dumps(body).encode(), False, True
    if kind == 2:  # unknown command
        return f"{BASE}/cmd/{uuid.uuid4().hex[:8]}/{rng.choice(['set', 'x', ''])}", b"{}", False, True
    if kind == 3 and rng.random() < 0.1:  # 1 MB
        return f"{BASE}/cmd/config/set", b"{" + b" " * (1024 * 1024) + b"}", False, True
    if kind in (3, 4):  # wrong topics: never seen by this device
        topic = rng.choice([f"edge/other-box/cmd/line/pause", f"{BASE}/cmdx/trigger", f"{BASE}/CMD/trigger",
                            f"edge/{DEVICE_ID}x/cmd/trigger", f"{BASE}/state"])
        return topic, b'{"args": {}}', False, False
    if kind == 5:  # replay of a signed command already used
        return f"{BASE}/cmd/ping", json.dumps(stale_ping).encode(), False, True
    if kind == 6:  # expired, correctly signed, actuating
        body = build_request(DEVICE_ID, "trigger", {}, key=key, now=time.time() - 600, validity_s=60)
        return f"{BASE}/cmd/trigger", json.dumps(body).encode(), False, True
    if kind == 7:  # unsigned but otherwise valid, actuating
        name, args = rng.choice([("line/pause", {}), ("trigger", {}), ("thresholds/set", {"default": 0.9}),
                                 ("config/set", {"patch": {"log_level": "DEBUG"}}), ("restart", {})])
        return f"{BASE}/cmd/{name}", json.dumps({"args": args}).encode(), False, True
    if kind == 8:  # signed by a stranger, or for another device, or for another command
        name = rng.choice(["line/pause", "trigger"])
        signer, device, signed_as = rng.choice([(Ed25519PrivateKey.generate(), DEVICE_ID, name), (key, "other-box", name),
                                                (key, DEVICE_ID, "ping")])
        body = build_request(device, signed_as, {}, key=signer)
        return f"{BASE}/cmd/{name}", json.dumps(body).encode(), False, True
    if kind == 9:  # correctly signed, bad arguments
        name, args = rng.choice([("thresholds/set", {"default": "high"}), ("thresholds/set", {"default": 7}),
                                 ("line/pause", {"line": "nope"}), ("log/level", {"level": "LOUD"}),
                                 ("config/set", {"patch": {"lines": {LINE: {"default_threshold": -1}}}})])
        return f"{BASE}/cmd/{name}", json.dumps(build_request(DEVICE_ID, name, args, key=key)).encode(), False, True
    if kind == 10:  # retained
        return f"{BASE}/cmd/line/pause", b'{"args": {}}', True, True
    # tampered: signed, then changed
    body = build_request(DEVICE_ID, "thresholds/set", {"default": 0.5}, key=key)
    body["args"]["default"] = 0.99
    return f"{BASE}/cmd/thresholds/set", json.dumps(body).encode(), False, True


def test_fuzzed_commands_while_the_line_runs(tmp_path):
    private, public = generate_keypair(tmp_path / "ops.pem")
    key = load_private_key(private)
    control = {"require_signature": True, "public_keys": [str(public)]}
    settings = CellSettings(seed=5, belt=BeltSettings(parts_per_minute=240), control=control)
    with SimulatedCell(settings) as cell:
        logging.getLogger("agent.control").setLevel(logging.ERROR)  # 1,200 refusals would flood the test log
        line = cell.app.lines[LINE]
        rule_before = line.rule
        config_before = hashlib.sha256(cell.config_path.read_bytes()).hexdigest()

        replies: dict[bytes, dict] = {}
        fallback: list[dict] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)

        def on_message(c, u, m):
            body = json.loads(m.payload)
            corr = getattr(m.properties, "CorrelationData", None)
            if m.topic == REPLY_TOPIC and corr:
                replies[bytes(corr)] = body
            elif m.topic == f"{BASE}/replies":
                fallback.append(body)

        client.on_message = on_message
        client.connect(cell.broker.host, cell.broker.port)
        client.loop_start()
        subscribed = threading.Event()
        client.on_subscribe = lambda *a: subscribed.set()
        client.subscribe([(REPLY_TOPIC, 1), (f"{BASE}/replies", 1)])
        assert subscribed.wait(5)

        def publish(topic, payload, retain=False, corr=None):
            props = Properties(PacketTypes.PUBLISH)
            if corr is not None:
                props.ResponseTopic = REPLY_TOPIC
                props.CorrelationData = corr
            return client.publish(topic, payload, qos=1, retain=retain, properties=props)

        # One signed ping, used once legitimately: every later copy is a replay.
        stale_ping = build_request(DEVICE_ID, "ping", {}, key=key)
        publish(f"{BASE}/cmd/ping", json.dumps(stale_ping).encode(), corr=b"first").wait_for_publish(5)

        parts = cell.make_parts(40)
        card_box: list = []
        runner = threading.Thread(target=lambda: card_box.append(cell.run(parts)), name="conveyor")
        runner.start()

        rng = random.Random(1234)
        expected: dict[bytes, tuple[str, bytes]] = {}
        without_address = 0
        rss_samples = []
        total = 1200
        for i in range(total):
            topic, payload, retain, replyable = malformed(rng, key, stale_ping)
            if replyable and i % 10 == 0:  # an MQTT 3 style client: no response topic, no reply_to
                without_address += 1
                publish(topic, payload, retain)
            else:
                corr = f"f{i}".encode()
                if replyable:
                    expected[corr] = (topic, payload[:60])
                publish(topic, payload, retain, corr)
            if retain:
                publish(topic, b"", True)  # clear it again, as the broker would otherwise keep it
            if i % 50 == 49:
                time.sleep(0.05)  # about 1,000 commands a second, not one burst
            if i == 300:
                rss_samples.append(rss_kib())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(replies) < len(expected) + 1:
            time.sleep(0.1)
        runner.join(60)
        rss_samples.append(rss_kib())
        client.loop_stop()
        client.disconnect()

        card = card_box[0]
        missing = {c: v for c, v in expected.items() if c not in replies}
        assert not missing, f"{len(missing)} commands got no reply, e.g. {list(missing.items())[:3]}"
        assert replies[b"first"]["ok"]
        for corr in expected:
            reply = replies[corr]
            assert not reply["ok"] and reply["code"] in ERROR_CODES, reply
        codes = {r["code"] for c, r in replies.items() if c != b"first"}
        assert {"bad_json", "bad_request", "unknown_command", "unsigned", "bad_signature", "expired", "replayed",
                "too_large"} <= codes, codes
        assert len(fallback) >= without_address * 0.9  # those went to the device's replies topic

        # kept inspecting every part, and nothing a command asked for happened
        assert card.no_result == 0 and card.events_received == len(parts), card.render()
        health = line.health()
        assert health["triggers"] == len(parts) and not line.paused and health["triggers_while_paused"] == 0
        assert line.rule is rule_before
        assert hashlib.sha256(cell.config_path.read_bytes()).hexdigest() == config_before
        assert _rising_edges(cell.pins.pin(REJECT_PIN)) == sum(r.reject for r in cell.results_by_id().values())
        assert logging.getLogger().level != logging.DEBUG
        stats = cell.app.control.stats()
        assert stats["accepted"] == 1 and stats["queued"] == 0
        growth_mib = (rss_samples[-1] - rss_samples[0]) / 1024
        print(f"\nfuzz: {total} commands, {len(replies)} replies, codes {sorted(codes)}, "
              f"RSS {rss_samples[0] / 1024:.0f} -> {rss_samples[-1] / 1024:.0f} MiB, {card.parts} parts inspected")
        assert growth_mib < 40, f"memory grew {growth_mib:.0f} MiB during the fuzz"
