"""Every command against a real mosquitto and a real agent in the simulated cell.

One cell for the module (the model loads once). Tests that change a setting put it back;
`trigger` runs last because it takes an inspection number the conveyor would otherwise use.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml

from agent.deliver.mqtt import MqttRequester
from hw_sim.harness import DEVICE_ID, LINE, SENSOR_PIN, CellSettings, SimulatedCell

pytestmark = pytest.mark.timeout(240)

SCHEMAS = Path(__file__).resolve().parents[1] / "agent" / "deliver" / "schemas"
REPLY_SCHEMA = json.loads((SCHEMAS / "reply.json").read_text())
BASE = f"edge/{DEVICE_ID}"


@pytest.fixture(scope="module")
def cell():
    with SimulatedCell(CellSettings(seed=99, defect_rate=1.0)) as cell:
        yield cell


@pytest.fixture(scope="module")
def requester(cell):
    with MqttRequester(cell.broker.host, cell.broker.port, reply_topic=f"{BASE}/replies/test") as req:
        yield req


@pytest.fixture
def command(requester):
    def send(name: str, args: dict | None = None, **envelope) -> dict:
        body = {"args": args or {}, **envelope}
        raw = requester.request(f"{BASE}/cmd/{name}", json.dumps(body).encode(), timeout_s=10)
        assert raw is not None, f"no reply to {name}"
        reply = json.loads(raw)
        jsonschema.validate(reply, REPLY_SCHEMA)
        return reply
    return send


def retained_state(cell) -> dict:
    return cell.recorder.messages(f"{BASE}/state")[-1].json()


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_ping_replies_on_the_response_topic_with_correlation(command):
    reply = command("ping", request_id="r1")
    assert reply["ok"] and reply["code"] == "ok" and reply["message"] == "pong"
    assert reply["command"] == "ping" and reply["device_id"] == DEVICE_ID and reply["request_id"] == "r1"


def test_status_reports_version_lines_models_sources_queues_outbox(command):
    data = command("status")["data"]
    assert data["version"] and data["uptime_s"] >= 0
    assert data["lines"][LINE]["running"] and data["lines"][LINE]["paused"] is False
    assert "defects" in data["models"] and data["models"]["defects"]["path"].endswith("int8")
    assert "cam0" in data["sources"]
    assert set(data["queues"][LINE]) == {"capture", "inspect", "deliver"}
    assert data["models"]["defects"]["version"] == "1.0.0" and data["models"]["defects"]["adapter"]
    assert isinstance(data["outbox"], dict) and data["outbox"]
    assert data["mqtt"]["connected"] is True
    assert data["commands"]["received"] >= 1
    assert isinstance(data["last_errors"], dict)


def test_config_get_returns_the_running_config(command):
    data = command("config/get")["data"]
    assert data["config"]["device"]["id"] == DEVICE_ID
    assert data["config"]["lines"][LINE]["trigger"]["pin"] == SENSOR_PIN
    assert data["path"].endswith("agent.yaml")


def test_pause_ignores_triggers_and_resume_restores_them(cell, command):
    line = cell.app.lines[LINE]
    before = line.counters["triggers"]
    reply = command("line/pause", {"line": LINE})
    assert reply["ok"] and reply["data"]["lines"][LINE]["paused"] is True
    wait_until(lambda: retained_state(cell)["lines"][LINE]["paused"] is True)
    pin = cell.pins.pin(SENSOR_PIN)
    for _ in range(3):  # parts passing the sensor while paused: no capture, no result, no actuation
        pin.drive_high()
        time.sleep(0.02)
        pin.drive_low()
        time.sleep(0.02)
    wait_until(lambda: line.triggers_while_paused == 3)
    assert line.counters["triggers"] == before
    assert command("line/resume")["data"]["lines"][LINE]["paused"] is False
    wait_until(lambda: retained_state(cell)["lines"][LINE]["paused"] is False)
    assert command("line/pause", {"line": "nope"})["code"] == "unknown_line"


def test_thresholds_set_changes_the_rule_the_next_inspection_uses(cell, command):
    parts = cell.make_parts(3)  # defect_rate 1.0: every part has a defect
    card = cell.run(parts)
    assert card.rejected_correct == 3, card.render()

    reply = command("thresholds/set", {"line": LINE, "default": 0.99})
    assert reply["ok"], reply
    assert reply["data"]["rule"]["default_threshold"] == 0.99 and reply["data"]["persisted"] is True
    wait_until(lambda: retained_state(cell)["lines"][LINE]["default_threshold"] == 0.99)
    on_disk = yaml.safe_load(cell.config_path.read_text())
    assert on_disk["lines"][LINE]["default_threshold"] == 0.99
    assert Path(str(cell.config_path) + ".prev").is_file()

    parts = cell.make_parts(3)
    cell.run(parts)
    events = cell.events_by_id()
    results = cell.results_by_id()
    for part in parts:  # the same kind of defective parts now pass: the new threshold is in use
        assert events[part.index]["result"] == "pass" and events[part.index]["defects"] == []
        assert not results[part.index].reject

    original = cell.settings.threshold
    assert command("thresholds/set", {"default": original})["ok"]
    assert cell.app.lines[LINE].rule.default_threshold == original
    assert command("thresholds/set", {"default": 1.5})["code"] == "bad_request"
    assert command("thresholds/set", {"thresholds": {"crack": 0}})["code"] == "bad_request"


def test_config_set_live_invalid_and_restart_needed(cell, command):
    path = cell.config_path
    reply = command("config/set", {"patch": {"lines": {LINE: {"thresholds": {"scratch": 0.5}}}}})
    assert reply["ok"] and reply["code"] == "ok"
    assert reply["data"]["applied_live"] == [f"lines.{LINE}.thresholds.scratch"]
    assert cell.app.lines[LINE].rule.thresholds == {"scratch": 0.5}

    before = path.read_text()
    reply = command("config/set", {"patch": {"lines": {LINE: {"default_threshold": 2}}}})
    assert not reply["ok"] and reply["code"] == "invalid_config"
    assert "default_threshold" in reply["message"] and reply["data"]["issues"]
    assert path.read_text() == before, "a config that does not validate must not be written"

    reply = command("config/set", {"patch": {"plc": {"timeout_ms": 300}}})  # not live-safe, no restart hook here
    assert reply["ok"] and reply["data"]["restart_needed"] == ["plc.timeout_ms"]
    assert "next restart" in reply["message"]
    assert yaml.safe_load(path.read_text())["plc"]["timeout_ms"] == 300

    restarts = []
    cell.app.control.request_restart = lambda: restarts.append(True)
    try:
        reply = command("config/set", {"patch": {"plc": {"timeout_ms": 250}, "lines": {LINE: {"thresholds": None}}}})
        assert reply["code"] == "restart_scheduled" and reply["ok"]
        wait_until(lambda: restarts == [True])
    finally:
        cell.app.control.request_restart = None
    assert cell.app.lines[LINE].rule.thresholds == {}
    assert command("config/set", {})["code"] == "bad_request"


def test_snapshot_publishes_a_jpeg_on_the_crops_topic(cell, command):
    reply = command("snapshot")
    assert reply["ok"], reply
    topic = reply["data"]["topic"]
    assert topic.startswith(f"{BASE}/crops/{LINE}/snapshot-")
    (jpeg,) = cell.recorder.wait_for(lambda ms: any(m.topic == topic for m in ms), timeout=5) and \
        [m for m in cell.recorder.messages(topic)]
    assert jpeg.payload[:2] == b"\xff\xd8" and jpeg.content_type == "image/jpeg"


def test_log_level_sets_the_level_and_the_state(cell, command):
    root = logging.getLogger()
    old = root.level
    try:
        reply = command("log/level", {"level": "DEBUG"})
        assert reply["ok"] and root.level == logging.DEBUG
        wait_until(lambda: retained_state(cell)["log_level"] == "DEBUG")
        assert command("log/level", {"level": "LOUD"})["code"] == "bad_request"
    finally:
        root.setLevel(old)


def test_sync_commands_without_a_sync_section_say_so(command):
    # Sync against a real update server is in test_sync_commands.py.
    sync = command("sync/now")
    assert not sync["ok"] and sync["code"] == "not_available" and sync["data"]["capability"] == "sync"
    assert "config section sync" in sync["message"]
    rollback = command("model/rollback")
    assert rollback["code"] == "not_available" and rollback["data"]["capability"] == "sync"


def test_restart_without_and_with_a_restart_hook(cell, command):
    assert command("restart")["code"] == "not_available"
    restarts = []
    cell.app.control.request_restart = lambda: restarts.append(True)
    try:
        reply = command("restart", {"reason": "test"})
        assert reply["ok"] and reply["code"] == "restart_scheduled"
        wait_until(lambda: restarts == [True])
    finally:
        cell.app.control.request_restart = None


def test_errors_get_replies(cell, requester, command):
    assert command("no/such")["code"] == "unknown_command"
    assert command("ping", {"x": 1})["code"] == "bad_request"
    assert command("ping", surprise=1)["code"] == "bad_request"
    raw = requester.request(f"{BASE}/cmd/ping", b"{not json", timeout_s=5)
    assert json.loads(raw)["code"] == "bad_json"
    raw = requester.request(f"{BASE}/cmd/ping", b"[1,2]", timeout_s=5)
    assert json.loads(raw)["code"] == "bad_json"


def test_mqtt311_client_uses_reply_to_and_request_id(cell):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"v311-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    got = []
    client.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    client.connect(cell.broker.host, cell.broker.port)
    client.loop_start()
    try:
        client.subscribe(f"{BASE}/replies/v311", qos=1)
        time.sleep(0.2)
        client.publish(f"{BASE}/cmd/ping", json.dumps({"request_id": 42, "reply_to": f"{BASE}/replies/v311"}), qos=1)
        client.publish(f"{BASE}/cmd/ping", json.dumps({"request_id": 43, "reply_to": f"{BASE}/cmd/ping"}), qos=1)
        wait_until(lambda: len(got) >= 1)
        assert got[0]["request_id"] == 42 and got[0]["ok"]
        # a reply_to on a command topic is refused; the reply goes to the device's replies topic
        wait_until(lambda: any(m.json().get("request_id") == 43 for m in cell.recorder.messages(f"{BASE}/replies")))
    finally:
        client.loop_stop()
        client.disconnect()


def test_audit_log_has_one_line_per_command(cell, command):
    command("ping", request_id="audit-me")
    audit = cell.workdir / "audit.log"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(r["request_id"] == "audit-me" and r["code"] == "ok" and r["command"] == "ping" for r in records)
    assert all({"ts", "command", "code", "ok"} <= r.keys() for r in records if r.get("code") != "wrong_topic")


def test_trigger_captures_now(cell, command):
    reply = command("trigger")
    assert reply["ok"], reply
    inspection_id = reply["data"]["inspection_id"]
    wait_until(lambda: inspection_id in cell.results_by_id(), timeout=10)
    wait_until(lambda: inspection_id in cell.events_by_id(), timeout=10)
    assert cell.events_by_id()[inspection_id]["trigger"]["source"] == "command"
