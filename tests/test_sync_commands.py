"""sync/now and model/rollback against a real mosquitto, a real agent in the simulated cell and
hw_sim.cloud over HTTPS: what is activated, what is refused and why, all as seen over MQTT.

One cell for the module; the tests run in order, each publishing a higher bundle version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from agent.deliver.mqtt import MqttRequester
from agent.sync.manifest import iso_time
from hw_sim.cloud import SimCloud
from hw_sim.harness import DEVICE_ID, LINE, CellSettings, SimulatedCell
from bundles import FP32, INT8, make, resign, signing_key, sync_section

pytestmark = pytest.mark.timeout(300)

BASE = f"edge/{DEVICE_ID}"
SCHEMAS = Path(__file__).resolve().parents[1] / "agent" / "deliver" / "schemas"
_SCHEMA = {name: json.loads((SCHEMAS / f"{name}.json").read_text()) for name in ("sync", "sync-event", "reply")}
_REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in _SCHEMA.values())


def validate(payload: dict, name: str) -> None:
    jsonschema.Draft202012Validator(_SCHEMA[name], registry=_REGISTRY).validate(payload)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync")
    key, public = signing_key(tmp)
    root = tmp / "cloud"
    for version, model in ((1, INT8), (2, FP32), (4, INT8), (5, INT8), (6, INT8), (7, INT8), (8, FP32)):
        make(root, version, key, model)
    make(root, 3, key, INT8, created_at=time.time() - 40 * 86400, expires_in_s=30 * 86400)  # expired
    resign(root / "5", key, _shift_every_expected_box)  # the model no longer reproduces its golden set
    (root / "6" / "models" / "defects" / "inspection-detector.xml").write_text("<net><layers>")
    resign(root / "6", key, _rehash(root / "6", "models/defects/inspection-detector.xml"))  # signed, unusable
    with SimCloud(root, tls=True) as cloud:
        settings = CellSettings(seed=5, sync=sync_section(cloud, public, trial={"duration_s": 4}))
        with SimulatedCell(settings, workdir=tmp / "cell") as cell:
            with MqttRequester(cell.broker.host, cell.broker.port, reply_topic=f"{BASE}/replies/sync") as requester:
                yield cloud, cell, requester, key


def _shift_every_expected_box(manifest: dict) -> None:
    for case in manifest["models"]["defects"]["golden"]:
        for detection in case["detections"]:
            detection["box"] = [v + 40 for v in detection["box"]]
    assert any(case["detections"] for case in manifest["models"]["defects"]["golden"])


def _rehash(bundle: Path, relative: str):
    from agent.sync.files import sha256_file

    def change(manifest: dict) -> None:
        file = bundle / relative
        manifest["artefacts"][relative].update(sha256=sha256_file(file), size=file.stat().st_size)
    return change


def command(requester, name: str, args: dict | None = None) -> dict:
    raw = requester.request(f"{BASE}/cmd/{name}", json.dumps({"args": args or {}}).encode(), timeout_s=60)
    assert raw is not None, f"no reply to {name}"
    reply = json.loads(raw)
    validate(reply, "reply")
    return reply


def sync_now(cloud, requester, version: int | None = None, **args) -> dict:
    if version is not None:
        cloud.publish(version)
    return command(requester, "sync/now", {"wait_s": 30, **args})


def events(cell) -> list[dict]:
    found = [m.json() for m in cell.recorder.messages(f"{BASE}/sync/events")]
    for event in found:
        validate(event, "sync-event")
    return found


def retained(cell, topic: str) -> dict:
    return [m for m in cell.recorder.messages(f"{BASE}/{topic}") if m.topic == f"{BASE}/{topic}"][-1].json()


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def active_version(cell) -> int | None:
    active = cell.app.sync.store.active
    return active.version if active else None


def test_sync_now_activates_and_state_shows_the_version_and_trial(world):
    cloud, cell, requester, _ = world
    assert retained(cell, "sync")["active"] is None  # the factory models at first
    reply = sync_now(cloud, requester, 1)
    assert reply["ok"] and reply["data"]["outcome"] == "activated" and reply["data"]["version"] == 1, reply
    details = reply["data"]["details"]
    assert details["golden"][0]["passed"] and details["golden"][0]["cases"] == 4
    print(f"\nsync of version 1: {details['timings']}, golden median {details['golden'][0]['latency_ms_p50']} ms")
    state = wait_for(lambda: (s := retained(cell, "state")).get("bundle", {}).get("version") == 1 and s)
    assert state["bundle"]["trial"]["version"] == 1 and state["bundle"]["label"] == "bundle 1"
    status = retained(cell, "sync")
    validate(status, "sync")
    assert status["active"]["version"] == 1 and status["active"]["catalog"] == "1" and status["trial"]["version"] == 1
    assert cell.app.lines[LINE].model_name == "defects:inspection-detector.xml@1"
    assert cell.app.catalog.by_label("4011").name == "Banana"
    card = cell.run(cell.make_parts(6))  # the line inspects with the bundle's model
    assert card.no_result == 0 and card.events_received == 6, card.render()
    assert {e["model"] for e in cell.events_by_id().values()} == {"defects:inspection-detector.xml@1"}
    wait_for(lambda: any(e["outcome"] == "trial_passed" and e["version"] == 1 for e in events(cell)))
    wait_for(lambda: retained(cell, "state")["bundle"]["trial"] is None)
    assert sync_now(cloud, requester)["data"]["code"] == "not_modified"  # If-None-Match: 304
    assert sync_now(cloud, requester, force=True)["data"]["code"] == "up_to_date"
    assert [r.status for r in cloud.requests_for("/manifest.json")][-2:] == [304, 200]


def test_a_newer_bundle_replaces_the_active_one(world):
    cloud, cell, requester, _ = world
    reply = sync_now(cloud, requester, 2)
    assert reply["data"]["outcome"] == "activated" and active_version(cell) == 2
    assert cell.app.sync.store.previous.version == 1
    assert cell.app.lines[LINE].model_name == "defects:inspection-detector.xml@2"
    assert cell.app.catalog.info.version == "2"
    wait_for(lambda: any(e["outcome"] == "trial_passed" and e["version"] == 2 for e in events(cell)))


@pytest.mark.parametrize("case, version, fault, outcome, code", [
    ("older version", 1, None, "refused", "rollback"),
    ("expired manifest", 3, None, "refused", "expired"),
    ("bad signature", 4, "bad_signature", "refused", "bad_signature"),
    ("tampered artefact", 4, "wrong_hash", "refused", "bad_hash"),
    ("golden check failed", 5, None, "refused", "golden_failed"),
    ("model does not compile", 6, None, "refused", "model_unusable"),
    ("server errors", 4, "http_500", "failed", "network"),
])
def test_refused_bundles_are_never_activated_and_the_reason_is_reported(world, case, version, fault, outcome, code):
    cloud, cell, requester, _ = world
    before = len(events(cell))
    if fault == "bad_signature":
        cloud.inject(fault, count=10, path="/manifest.json")
    elif fault == "wrong_hash":
        cloud.inject(fault, count=10, path=f"/{version}/catalog.db")  # new in every version: downloaded
    elif fault == "http_500":
        cloud.inject(fault, count=10, path=f"/{version}/catalog.db")
    try:
        reply = sync_now(cloud, requester, version, force=True)
    finally:
        cloud.clear_faults()
    assert not reply["ok"] and reply["code"] == "failed", reply
    assert (reply["data"]["outcome"], reply["data"]["code"]) == (outcome, code), reply["data"]
    reported = wait_for(lambda: events(cell)[before:])
    assert (reported[-1]["outcome"], reported[-1]["code"]) == (outcome, code)
    assert reported[-1]["message"] == reply["data"]["message"]
    print(f"\n{case}: {reported[-1]['message'][:160]}")
    assert active_version(cell) == 2  # never activated
    assert cell.app.lines[LINE].model_name == "defects:inspection-detector.xml@2"
    assert not (cell.app.sync.store.slots_dir / str(version)).exists() or version == 1
    assert list(cell.app.sync.store.staging_dir.iterdir()) == []
    wait_for(lambda: retained(cell, "sync")["last"]["code"] == code)  # published right after the event


def test_model_rollback_goes_back_and_the_version_left_is_not_installed_again(world):
    cloud, cell, requester, _ = world
    update = sync_now(cloud, requester, 7)
    assert update["data"]["outcome"] == "activated"
    # the INT8 model and golden images of 7 are those of 1, the previous slot: copied, not downloaded
    assert update["data"]["details"]["reused"] == 7 and cloud.requests_for("/7/models/*") == []
    assert [r.path for r in cloud.requests_for("/7/*")] == ["/7/catalog.db"]
    wait_for(lambda: cell.app.sync.store.trial is None, timeout=30)
    reply = command(requester, "model/rollback", {"reason": "operator saw false rejects"})
    assert reply["ok"] and reply["data"]["outcome"] == "rolled_back" and reply["data"]["details"]["to"] == 2, reply
    assert active_version(cell) == 2 and cell.app.lines[LINE].model_name == "defects:inspection-detector.xml@2"
    wait_for(lambda: retained(cell, "state")["bundle"]["version"] == 2)
    assert wait_for(lambda: [e for e in events(cell) if e["outcome"] == "rolled_back"])[-1]["version"] == 7
    skipped = sync_now(cloud, requester, 7, force=True)
    assert skipped["ok"] and skipped["data"]["code"] == "failed_before" and active_version(cell) == 2
    card = cell.run(cell.make_parts(4))
    assert card.no_result == 0 and card.events_received == 4, card.render()
    # the previous slot of version 2 was pruned when 7 came: a second rollback goes to the factory models
    reply = command(requester, "model/rollback")
    assert reply["ok"] and reply["data"]["details"]["to"] is None and active_version(cell) is None
    assert cell.app.lines[LINE].model_name == "defects:inspection-detector.xml" and cell.app.catalog is None
    refused = command(requester, "model/rollback")
    assert refused["code"] == "failed" and "factory" in refused["message"]
    assert sync_now(cloud, requester, 8)["data"]["outcome"] == "activated" and active_version(cell) == 8


def test_sync_now_during_a_trial_is_skipped_and_without_waiting_just_starts(world):
    cloud, cell, requester, key = world
    assert cell.app.sync.store.trial is not None  # version 8 from the test before
    reply = sync_now(cloud, requester, 8)
    assert reply["ok"] and reply["data"]["outcome"] == "skipped" and reply["data"]["code"] == "trial_running"
    started = command(requester, "sync/now")  # wait_s 0: the reply does not wait for the outcome
    assert started["ok"] and started["data"] == {"started": True, "finished": False}
    assert "sync/events" in started["message"]


def test_expiry_is_judged_by_the_device_clock(world, monkeypatch):
    cloud, cell, requester, key = world
    wait_for(lambda: cell.app.sync.store.trial is None, timeout=30)
    manifest = cell.app.sync.store.active.manifest
    job = cell.app.sync
    monkeypatch.setattr(job, "_clock", lambda: manifest.expires() + 1)
    reply = sync_now(cloud, requester, 8, force=True)
    assert reply["data"]["code"] == "expired" and iso_time(manifest.expires()) in reply["data"]["message"]
