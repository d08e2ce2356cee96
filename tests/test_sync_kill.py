"""SIGKILL during syncs, against a real `edge-agent run` process, and boot counting in a trial.

Broker, PLC, camera and update server stay up; the agent inspects on an interval trigger and is
killed at a random moment after each `sync/now`: fetching the manifest, downloading, running
the golden check, switching, or on trial. After every kill the `active` link on disk names a
complete slot (every artefact's sha256 checked here, independently of the agent's code), and
after every restart the agent runs that slot's models and product database, old or new.

The acceptance run (30 kills) is slow; the default suite runs 4.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from agent.deliver.mqtt import MqttRequester
from bundles import FP32, INT8, make, signing_key, sync_section
from hw_sim.broker import MosquittoBroker
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.cloud import SimCloud
from hw_sim.harness import DEFAULT_MODEL, DEVICE_ID, LINE, agent_config
from hw_sim.plc import SimPlc
from hw_sim.scene import PartRenderer
from hw_sim.subscriber import MqttRecorder

BASE = f"edge/{DEVICE_ID}"


@dataclass
class Device:
    workdir: Path
    broker: MosquittoBroker
    plc: SimPlc
    camera: SimCamera
    cloud: SimCloud
    recorder: MqttRecorder
    public_key: Path
    proc: subprocess.Popen | None = None
    runs: int = 0
    started_at: float = 0.0
    store: Path = field(init=False)

    def __post_init__(self):
        self.store = self.workdir / "state" / "bundles"

    def write_config(self, trial_s: float) -> None:
        config = agent_config(self.broker, self.plc, self.camera, DEFAULT_MODEL, 0.4,
                              outbox=self.workdir / "state" / "outbox.db")
        config["log_level"] = "INFO"
        config["model_cache_dir"] = str(self.workdir / "cache")
        config["lines"][LINE]["trigger"] = {"type": "interval", "period_ms": 100}
        config["sync"] = sync_section(self.cloud, self.public_key, trial={"duration_s": trial_s})
        (self.workdir / "agent.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        self.started_at = time.monotonic()
        with open(self.workdir / f"agent-{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.workdir / "agent.yaml")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=20) == 0, self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"agent-{self.runs}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def wait_online(self, timeout: float = 90) -> None:
        since = self.started_at
        try:
            self.recorder.wait_for(lambda ms: any(
                m.topic == f"{BASE}/status" and m.t_mono >= since and m.json()["state"] == "online" for m in ms),
                timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"the agent did not come online; log:\n{self.log_tail()}") from None

    def command(self, name: str, args: dict | None = None, timeout_s: float = 40) -> dict:
        with MqttRequester(self.broker.host, self.broker.port, reply_topic=f"{BASE}/replies/kill") as requester:
            raw = requester.request(f"{BASE}/cmd/{name}", json.dumps({"args": args or {}}).encode(), timeout_s=timeout_s)
        assert raw is not None, f"no reply to {name}; log:\n{self.log_tail()}"
        return json.loads(raw)

    def sync_events(self, since: float = 0.0) -> list[dict]:
        return [m.json() for m in self.recorder.messages(f"{BASE}/sync/events") if m.t_mono >= since]

    def wait_sync_event(self, outcome: str, since: float, timeout: float = 15.0) -> list[dict]:
        """The sync events since `since`, once one with this outcome arrived (they come through the outbox)."""
        self.recorder.wait_for(lambda ms: any(m.topic == f"{BASE}/sync/events" and m.t_mono >= since
                                              and m.json()["outcome"] == outcome for m in ms), timeout=timeout)
        return self.sync_events(since)


@pytest.fixture
def device(tmp_path) -> Iterator[Device]:
    key, public = signing_key(tmp_path)
    renderer = PartRenderer(seed=3, defect_rate=1.0)
    stack = []
    try:
        broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
        broker.start()
        stack.append(broker.stop)
        plc, camera = SimPlc(), SimCamera()
        for part in (plc, camera):
            part.start()
            stack.append(part.stop)
        camera.show(encode_jpeg(renderer.render().image))
        cloud = SimCloud(tmp_path / "cloud", tls=True)
        cloud.start()
        stack.append(cloud.stop)
        recorder = MqttRecorder(broker.host, broker.port, f"{BASE}/#")
        recorder.start()
        stack.append(recorder.stop)
        dev = Device(tmp_path, broker, plc, camera, cloud, recorder, public)
        dev.key = key
        yield dev
        if dev.proc is not None and dev.proc.poll() is None:
            dev.proc.kill()
            dev.proc.wait()
    finally:
        while stack:
            stack.pop()()


def active_on_disk(store: Path) -> int | None:
    """The version `active` names, after checking that slot against its manifest (None: factory)."""
    link = store / "active"
    if not link.is_symlink():
        return None
    slot = store / os.readlink(link)
    manifest = json.loads(base64.b64decode(json.loads((slot / "manifest.json").read_bytes())["payload"]))
    for path, artefact in manifest["artefacts"].items():
        data = (slot / path).read_bytes()
        assert len(data) == artefact["size"] and hashlib.sha256(data).hexdigest() == artefact["sha256"], \
            f"{slot.name}/{path} is incomplete or damaged"
    assert slot.name == str(manifest["version"])
    return manifest["version"]


def running(device: Device) -> int | None:
    """The version the agent runs, from its status: models and product database agree with it."""
    data = device.command("status")["data"]
    active = data["sync"]["active"]
    version = active["version"] if active else None
    model = data["lines"][LINE]["model"]
    if version is None:
        assert not model.count("@") and "catalog" not in data, data
    else:
        assert model.endswith(f"@{version}") and data["catalog"]["version"] == str(version), (model, data.get("catalog"))
    return version


def _kills(device: Device, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    for version in range(1, kills + 2):
        make(device.cloud.root, version, device.key, INT8 if version % 2 else FP32)
    device.write_config(trial_s=1.0)
    device.start()
    device.wait_online()
    device.cloud.publish(1)
    first = device.command("sync/now", {"wait_s": 30})
    assert first["data"]["outcome"] == "activated", first
    sync_s = first["data"]["details"]["timings"]["total_s"]
    time.sleep(1.5)  # its trial
    # Kill moments spread from before the manifest is fetched to after the 1 s trial, in random order;
    # the product database (new in every version) downloads in about 1 s, so kills land there too.
    span = sync_s + 1.0 + 1.0 + 1.0
    delays = [span * (i + rng.random()) / kills for i in range(kills)]
    rng.shuffle(delays)
    old, outcomes, phases = 1, Counter(), Counter()
    for version, delay in zip(range(2, kills + 2), delays):
        device.cloud.publish(version)
        database = device.cloud.root / str(version) / "catalog.db"
        device.cloud.inject("slow", path=f"/{version}/catalog.db", rate=database.stat().st_size)
        assert device.command("sync/now")["ok"]
        time.sleep(delay)
        phases[_phase(device, version)] += 1
        device.kill()
        on_disk = active_on_disk(device.store)
        assert on_disk in (old, version), f"after the kill, active is {on_disk}, expected {old} or {version}"
        device.start()
        device.wait_online()
        now = running(device)
        assert now == active_on_disk(device.store) and now in (old, version), (now, old, version)
        outcomes["new" if now == version else "old"] += 1
        old = now
    device.stop()
    reverts = sum(e["outcome"] == "reverted" and e["code"] == "crashed" for e in device.sync_events())
    print(f"\n{kills} kills at random points (sync takes {sync_s:.2f} s): running afterwards {dict(outcomes)}; "
          f"killed while {dict(phases)}; {reverts} trial(s) reverted after a crash")
    if kills >= 10:  # both ends were reached: kills before the switch and after the trial
        assert outcomes["new"] and outcomes["old"]


def _phase(device: Device, version: int) -> str:
    """Roughly where the kill lands, from the staging and slot folders (for the report only)."""
    if (device.store / "staging" / str(version)).exists():
        return "downloading or checking"
    link = device.store / "active"
    if link.is_symlink() and os.readlink(link) == f"slots/{version}":
        return "on trial" if '"until"' in (device.store / "state.json").read_text() else "after the trial"
    if (device.store / "slots" / str(version)).exists():
        return "committed, not yet switched"
    return "before staging"


@pytest.mark.timeout(600)
def test_sigkill_during_syncs_short(device):
    _kills(device, kills=4, seed=4)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigkill_during_thirty_syncs(device):
    _kills(device, kills=30, seed=30)


@pytest.mark.timeout(300)
def test_a_crash_during_the_trial_reverts_and_a_clean_restart_does_not(device):
    for version, model in ((1, INT8), (2, FP32), (3, INT8)):
        make(device.cloud.root, version, device.key, model)
    device.write_config(trial_s=2.0)
    device.start()
    device.wait_online()
    device.cloud.publish(1)
    assert device.command("sync/now", {"wait_s": 30})["data"]["outcome"] == "activated"
    device.recorder.wait_for(lambda ms: any(m.topic == f"{BASE}/sync/events" and m.json()["outcome"] == "trial_passed"
                                            for m in ms), timeout=30)
    device.stop()
    device.write_config(trial_s=600.0)  # a long trial for version 2
    device.start()
    device.wait_online()
    device.cloud.publish(2)
    assert device.command("sync/now", {"wait_s": 30})["data"]["outcome"] == "activated"
    device.stop()  # a clean stop: the trial goes on after the restart
    device.start()
    device.wait_online()
    assert running(device) == 2
    trial = device.command("status")["data"]["sync"]["trial"]
    assert trial["version"] == 2 and trial["crashes"] == 0
    since = time.monotonic()
    device.kill()  # a crash during the trial: boot counting reverts it at the next start
    device.start()
    device.wait_online()
    assert running(device) == 1 and active_on_disk(device.store) == 1
    reverted = [e for e in device.wait_sync_event("reverted", since) if e["outcome"] == "reverted"]
    assert reverted and reverted[-1]["code"] == "crashed" and reverted[-1]["version"] == 2, device.sync_events(since)
    status = device.command("status")["data"]["sync"]
    assert status["failed"]["2"].startswith("the agent stopped uncleanly") and status["trial"] is None
    device.cloud.publish(2)
    assert device.command("sync/now", {"wait_s": 30, "force": True})["data"]["code"] == "failed_before"
    device.cloud.publish(3)
    assert device.command("sync/now", {"wait_s": 30})["data"]["outcome"] == "activated"
    assert running(device) == 3
    device.stop()
