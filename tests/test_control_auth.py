"""Command authorisation: signatures, validity windows, replay protection across restarts, audit;
the pure logic as unit tests, then a signed-only device against a real mosquitto."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.control.auth import (
    AuditLog, Authoriser, ControlSetupError, ReplayStore, generate_keypair, load_private_key, load_public_key, sign,
)
from agent.control.ctl import build_request
from agent.deliver.mqtt import MqttRequester
from hw_sim.harness import DEVICE_ID, LINE, REJECT_PIN, CellSettings, SimulatedCell

DEVICE = "dev1"


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def replay(tmp_path):
    store = ReplayStore(tmp_path / "seen.db")
    yield store
    store.close()


def authoriser(key, replay, *, require=True, clock=time.time):
    return Authoriser(DEVICE, [key.public_key()], replay, require_signature=require, max_validity_s=300,
                      clock_skew_s=30, clock=clock)


def test_a_signed_command_passes_once(key, replay):
    auth = authoriser(key, replay)
    body = build_request(DEVICE, "line/pause", {"line": "a"}, key=key)
    assert auth.check("line/pause", body).ok
    assert auth.check("line/pause", body).code == "replayed"


def test_refusals_name_the_reason(key, replay):
    auth = authoriser(key, replay)
    now = time.time()
    assert auth.check("ping", {"args": {}}).code == "unsigned"
    other = Ed25519PrivateKey.generate()
    assert auth.check("ping", build_request(DEVICE, "ping", {}, key=other)).code == "bad_signature"
    assert auth.check("ping", build_request("dev2", "ping", {}, key=key)).code == "bad_signature"  # another device's
    assert auth.check("trigger", build_request(DEVICE, "ping", {}, key=key)).code == "bad_signature"  # another command
    tampered = build_request(DEVICE, "thresholds/set", {"default": 0.5}, key=key)
    tampered["args"]["default"] = 0.9
    assert auth.check("thresholds/set", tampered).code == "bad_signature"
    assert auth.check("ping", {**build_request(DEVICE, "ping", {}), "sig": "!!"}).code == "bad_signature"
    expired = build_request(DEVICE, "ping", {}, key=key, now=now - 120, validity_s=60)
    assert auth.check("ping", expired).code == "expired"
    future = build_request(DEVICE, "ping", {}, key=key, now=now + 600)
    assert auth.check("ping", future).code == "not_yet_valid"
    too_long = build_request(DEVICE, "ping", {}, key=key, validity_s=3600)
    assert auth.check("ping", too_long).code == "bad_request"
    no_id = sign(key, DEVICE, "ping", {"args": {}, "issued_at": now, "expires_at": now + 10})
    assert auth.check("ping", no_id).code == "bad_request"


def test_unsigned_allowed_when_not_required_but_a_bad_signature_never(key, replay):
    auth = authoriser(key, replay, require=False)
    assert auth.check("ping", {"args": {}}).ok
    assert auth.check("ping", {**build_request(DEVICE, "ping", {}), "sig": "AAAA"}).code == "bad_signature"
    body = build_request(DEVICE, "ping", {})  # unsigned but with a cmd_id: still not twice
    assert auth.check("ping", body).ok and auth.check("ping", body).code == "replayed"


def test_seen_ids_survive_a_restart_and_expire(tmp_path, key):
    path = tmp_path / "seen.db"
    clock = [1_000_000.0]
    first = ReplayStore(path)
    body = build_request(DEVICE, "restart", {}, key=key, now=clock[0], validity_s=60)
    assert authoriser(key, first, clock=lambda: clock[0]).check("restart", body).ok
    first.close()
    second = ReplayStore(path)  # the agent restarted
    try:
        assert authoriser(key, second, clock=lambda: clock[0] + 5).check("restart", body).code == "replayed"
        clock[0] += 3600
        fresh = build_request(DEVICE, "ping", {}, key=key, now=clock[0])
        assert authoriser(key, second, clock=lambda: clock[0]).check("ping", fresh).ok
        assert len(second) == 1, "expired ids are pruned"
    finally:
        second.close()


@pytest.mark.timeout(120)
def test_ctl_signs_sends_and_prints_the_reply(tmp_path, capsys):
    from agent.cli import main

    assert main(["ctl", "--keygen", str(tmp_path / "ops.pem")]) == 0
    control = {"require_signature": True, "public_keys": [str(tmp_path / "ops.pem.pub")]}
    with SimulatedCell(CellSettings(control=control)) as cell:
        where = ["--host", cell.broker.host, "--port", str(cell.broker.port)]
        capsys.readouterr()
        assert main(["ctl", *where, "--key", str(tmp_path / "ops.pem"), DEVICE_ID, "thresholds/set",
                     f"line={LINE}", "default=0.5", "--args", '{"persist": false}']) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["ok"] and reply["data"]["rule"]["default_threshold"] == 0.5
        assert cell.app.lines[LINE].rule.default_threshold == 0.5
        assert main(["ctl", *where, DEVICE_ID, "status"]) == 1  # unsigned: refused
        assert json.loads(capsys.readouterr().out)["code"] == "unsigned"
        assert main(["ctl", *where, "--timeout", "0.5", "nobody", "ping"]) == 3
        assert "no reply from nobody" in capsys.readouterr().err
    assert main(["ctl", "--host", "127.0.0.1", "--port", "1", DEVICE_ID, "ping"]) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_key_files(tmp_path):
    private, public = generate_keypair(tmp_path / "ops.pem")
    assert (private.stat().st_mode & 0o777) == 0o600
    key = load_private_key(private)
    assert load_public_key(public).public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(ControlSetupError, match="exists"):
        generate_keypair(tmp_path / "ops.pem")
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(ControlSetupError, match="junk.pub"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(ControlSetupError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")


def test_audit_log_rotates(tmp_path):
    audit = AuditLog(tmp_path / "audit.log", max_bytes=4096)
    for i in range(200):
        audit.write({"command": "ping", "i": i})
    audit.close()
    assert (tmp_path / "audit.log.1").is_file() and (tmp_path / "audit.log").stat().st_size <= 4096
    assert json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["i"] == 199


@pytest.mark.timeout(120)
def test_signed_only_device_over_mosquitto(tmp_path):
    private, public = generate_keypair(tmp_path / "ops.pem")
    key = load_private_key(private)
    control = {"require_signature": True, "public_keys": [str(public)]}
    with SimulatedCell(CellSettings(control=control)) as cell:
        base = f"edge/{DEVICE_ID}"
        line = cell.app.lines[LINE]
        with MqttRequester(cell.broker.host, cell.broker.port, reply_topic=f"{base}/replies/t") as req:
            def send(name, body):
                return json.loads(req.request(f"{base}/cmd/{name}", json.dumps(body).encode(), timeout_s=10))

            assert send("line/pause", {"args": {}})["code"] == "unsigned"
            forged = build_request(DEVICE_ID, "line/pause", {}, key=Ed25519PrivateKey.generate())
            assert send("line/pause", forged)["code"] == "bad_signature"
            expired = build_request(DEVICE_ID, "trigger", {}, key=key, now=time.time() - 100, validity_s=30)
            assert send("trigger", expired)["code"] == "expired"
            assert not line.paused and line.counters["triggers"] == 0, "a refused command actuates nothing"

            signed = build_request(DEVICE_ID, "line/pause", {}, key=key)
            reply = send("line/pause", signed)
            assert reply["ok"] and line.paused and reply["cmd_id"] == signed["cmd_id"]
            line.paused = False
            assert send("line/pause", signed)["code"] == "replayed"
            assert not line.paused
        assert not any(s.state for s in cell.pins.pin(REJECT_PIN).states[1:]), "no reject pulse"
        records = [json.loads(x) for x in (cell.workdir / "audit.log").read_text().splitlines()]
        codes = [r["code"] for r in records]
        assert codes == ["unsigned", "bad_signature", "expired", "ok", "replayed"]
        assert records[3]["key"] and records[3]["cmd_id"] == signed["cmd_id"]


def test_config_control_section(tmp_path):
    from agent.config import ConfigError, load_config
    from hw_sim.harness import DEFAULT_MODEL

    base = {"device": {"id": "d1"}, "mqtt": {"host": "localhost"}, "plc": {"host": "127.0.0.1"},
            "outbox": {"path": str(tmp_path / "state" / "outbox.db")},
            "models": {"m": {"path": str(DEFAULT_MODEL)}},
            "cameras": {"c": {"type": "http_snapshot", "url": "http://127.0.0.1:1/x.jpg"}},
            "lines": {"l": {"camera": "c", "model": "m", "trigger": {"type": "interval", "period_ms": 1000}}}}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**base, "control": {"require_signature": True}}, sort_keys=False))
    with pytest.raises(ConfigError, match=r"agent.yaml:\d+ control.public_keys: require_signature needs"):
        load_config(path)
    path.write_text(yaml.safe_dump({**base, "control": {"public_keys": ["keys/ops.pub"], "replay_window": 5}}))
    with pytest.raises(ConfigError, match="control.replay_window: unknown key"):
        load_config(path)
    path.write_text(yaml.safe_dump({**base, "control": {"public_keys": ["keys/ops.pub"]}}))
    control = load_config(path).control
    assert control.public_keys == [tmp_path / "keys" / "ops.pub"]  # relative to the config file
    assert control.replay_db == tmp_path / "state" / "commands.db" and control.audit_log == tmp_path / "state" / "audit.log"


def test_provision_turns_signing_on_with_an_operator_key(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from agent.config import load_config

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "root"
    root.mkdir()
    _, public = generate_keypair(tmp_path / "ops.pem")

    def provision(*extra):
        return subprocess.run(
            [sys.executable, "-m", "agent", "provision", "--root", str(root), "--template",
             str(repo / "provisioning" / "fleet.template.yaml"), "--device-id", "box1", "--broker-url",
             "mqtt://127.0.0.1:1883", "--plc", "127.0.0.1", "--camera", "cam0=http://127.0.0.1/x.jpg", *extra],
            capture_output=True, text=True, timeout=120)

    first = provision()
    assert first.returncode == 0, first.stderr
    assert "commands are accepted unsigned" in first.stdout
    assert load_config(root / "etc/edge-agent/config.yaml").control.require_signature is False
    second = provision("--operator-key", str(public))
    assert second.returncode == 0, second.stderr
    assert "accepted unsigned" not in second.stdout
    control = yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())["control"]
    assert control == {"require_signature": True, "public_keys": ["/etc/edge-agent/operators/ops.pem.pub"]}
    assert (root / "etc/edge-agent/operators/ops.pem.pub").read_bytes() == public.read_bytes()
    (tmp_path / "bad.pub").write_text("nope")
    third = provision("--operator-key", str(tmp_path / "bad.pub"))
    assert third.returncode == 2 and "--operator-key" in third.stderr and "Traceback" not in third.stderr
