"""HTTP actions under faults, against a real `edge-agent run` process.

The agent inspects on an interval trigger with the simulated camera and PLC, delivers events
to a real mosquitto (an independent recorder plays the cloud) and POSTs every event to a
simulated POS (hw_sim.pos.SimPos, a real HTTP server on loopback). The cloud's copy of the
events is the ground truth: every event the outbox committed reaches the POS too.

The full-length runs (12 kills, a minute of a hanging POS) are marked slow; the default suite
runs shorter versions of the same tests.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hw_sim.agent_process import AgentProcess
from hw_sim.broker import MosquittoBroker
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.harness import DEFAULT_MODEL, DEVICE_ID, LINE, agent_config
from hw_sim.plc import SimPlc
from hw_sim.pos import SimPos
from hw_sim.scene import PartRenderer
from hw_sim.subscriber import MqttRecorder

BASE = f"edge/{DEVICE_ID}"
PERIOD_MS = 100  # one inspection every 100 ms
TARGET = f"{LINE}/pos"


@dataclass
class Calls:
    """The HTTP side of the outbox file, read the way an auditor would: one read transaction."""

    integrity: str
    counters: dict[str, int]
    rows: int
    event_ids: set[str]
    mqtt_pending: int

    @property
    def pending(self) -> int:
        c = self.counters
        return c["produced"] - c["delivered"] - c["refused"] - c["expired"] - c["evicted"]

    def assert_adds_up(self) -> None:
        assert self.integrity == "ok", self.integrity
        assert self.rows == self.pending, f"{self.rows} calls in the file but the counters say {self.pending} pending"


def read_calls(path: Path) -> Calls:
    db = sqlite3.connect(path, timeout=10)
    try:
        integrity = "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        db.execute("BEGIN")
        names = ("produced", "delivered", "refused", "expired", "evicted")
        if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'http_counters'").fetchone() == (0,):
            return Calls(integrity, dict.fromkeys(names, 0), 0, set(), 0)  # the agent is still creating the file
        row = db.execute(f"SELECT {', '.join(names)} FROM http_counters WHERE target = ?", (TARGET,)).fetchone()
        counters = dict(zip(names, row or (0,) * len(names)))
        event_ids = {r[0] for r in db.execute("SELECT event_id FROM http_calls WHERE target = ?", (TARGET,))}
        (mqtt_pending,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
        db.execute("COMMIT")
    finally:
        db.close()
    return Calls(integrity, counters, len(event_ids), event_ids, mqtt_pending)


@dataclass
class Cell:
    """Broker, PLC, camera, recorder and POS stay up across agent restarts; the agent comes and goes."""

    workdir: Path
    broker: MosquittoBroker
    plc: SimPlc
    camera: SimCamera
    recorder: MqttRecorder
    pos: SimPos
    outbox_path: Path
    agent: AgentProcess = field(init=False)

    def __post_init__(self) -> None:
        self.agent = AgentProcess(self.workdir, self.workdir / "agent.yaml")

    def write_config(self, timeout_ms: int = 500) -> None:
        config = agent_config(self.broker, self.plc, self.camera, DEFAULT_MODEL, 0.4, outbox=self.outbox_path)
        config["log_level"] = "INFO"
        line = config["lines"][LINE]
        line["trigger"] = {"type": "interval", "period_ms": PERIOD_MS}
        line["webhooks"] = [{"name": "pos", "url": self.pos.url, "timeout_ms": timeout_ms, "backoff_ms": 100,
                             "backoff_max_ms": 1000, "headers": POS_HEADERS}]
        self.agent.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.agent.running, f"the agent exited; log:\n{self.agent.log_tail()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout} s; agent log:\n{self.agent.log_tail()}")
            time.sleep(0.2)

    def calls(self) -> Calls:
        return read_calls(self.outbox_path)

    def cloud_event_ids(self) -> set[str]:
        return {m.json()["event_id"] for m in self.recorder.messages(f"{BASE}/events/")}

    def produced(self) -> int:
        return self.calls().counters["produced"] if self.outbox_path.exists() else 0

    def drain_and_stop(self, produced_before: int) -> Calls:
        """With everything up: wait until this run has produced and nothing is pending (HTTP and MQTT),
        then a clean stop."""
        def drained() -> bool:
            calls = self.calls()
            return calls.counters["produced"] >= produced_before + 5 and calls.pending == 0 and calls.mqtt_pending == 0

        self.wait_for(lambda: self.outbox_path.exists() and drained(), 60, "every call delivered")
        assert self.agent.stop() == 0, self.agent.log_tail()
        final = self.calls()
        final.assert_adds_up()
        return final


# The webhook's headers: the token comes from a credential file, as systemd's LoadCredential= passes it.
POS_TOKEN = "Bearer pos-secret-7"
POS_HEADERS = {"Authorization": "credential:pos-token", "X-Store": "12"}


@pytest.fixture
def cell(tmp_path, monkeypatch) -> Iterator[Cell]:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pos-token").write_text(POS_TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))  # the agent's child process inherits it
    if not (DEFAULT_MODEL / "inspection-detector.xml").exists():
        pytest.fail(f"the shipped model {DEFAULT_MODEL} is missing: build it (see the README, Models)")
    stack: list = []
    try:
        broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
        broker.start()
        stack.append(broker.stop)
        plc = SimPlc()
        plc.start()
        stack.append(plc.stop)
        camera = SimCamera()
        camera.start()
        stack.append(camera.stop)
        camera.show(encode_jpeg(PartRenderer(seed=3).render().image))
        recorder = MqttRecorder(broker.host, broker.port, f"{BASE}/#")
        recorder.start()
        stack.append(recorder.stop)
        pos = SimPos()
        pos.start()
        stack.append(pos.stop)
        the_cell = Cell(tmp_path, broker, plc, camera, recorder, pos, tmp_path / "state" / "outbox.db")
        stack.append(the_cell.agent.kill)
        yield the_cell
    finally:
        while stack:
            stack.pop()()


def assert_everything_reached_the_pos(cell: Cell, final: Calls) -> None:
    c = final.counters
    assert final.pending == 0 and c["refused"] == c["expired"] == c["evicted"] == 0, c
    assert c["delivered"] == c["produced"]
    applied = cell.pos.applied()
    cloud = cell.cloud_event_ids()
    # Every event committed reached the POS, and nothing else did: the event and its call commit together.
    assert set(applied) == cloud, (f"{len(cloud - set(applied))} events never reached the POS, "
                                   f"{len(set(applied) - cloud)} reached it without reaching the cloud")
    assert len(applied) == c["produced"]
    bodies: dict[str | None, bytes] = {}
    for request in cell.pos.requests():
        assert bodies.setdefault(request.key, request.body) == request.body, f"two bodies under {request.key}"
        assert (request.headers.get("Authorization"), request.headers.get("X-Store")) == (POS_TOKEN, "12")


# -- SIGKILL with calls pending ------------------------------------------------------------------------------


def _kills_with_calls_pending(cell: Cell, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    cell.write_config()
    seen_pending: set[str] = set()
    for n in range(kills):
        # The POS is down, or failing, or up (the kill lands while calls are being delivered).
        mode = ("down", "503", "up")[n % 3]
        if mode == "down":
            cell.pos.stop()
        elif mode == "503":
            cell.pos.answer(503)
        produced_before = cell.produced()
        cell.agent.start()
        cell.wait_for(lambda: cell.produced() >= produced_before + 5, 90, "five new calls committed")
        time.sleep(rng.uniform(0.2, 3.0))
        cell.agent.kill()
        calls = cell.calls()
        calls.assert_adds_up()  # integrity_check is ok, the counters match the rows
        if mode != "up":
            assert calls.pending >= 5, f"the POS was {mode}, yet only {calls.pending} calls wait"
        seen_pending |= calls.event_ids
        if mode == "down":
            cell.pos.start()
        cell.pos.answer(200)

    produced_before = cell.produced()
    cell.agent.start()
    final = cell.drain_and_stop(produced_before)
    assert_everything_reached_the_pos(cell, final)
    assert seen_pending <= set(cell.pos.applied())
    applied = cell.pos.applied()
    print(f"\n{kills} kills; {final.counters['produced']} calls committed, {len(seen_pending)} seen pending after "
          f"a kill; {sum(applied.values())} applied by the POS ({sum(applied.values()) - len(applied)} repeats of a "
          f"key), {len(cell.pos.requests())} requests in all")


@pytest.mark.timeout(300)
def test_sigkill_with_calls_pending_then_restart_delivers_everything_short(cell):
    _kills_with_calls_pending(cell, kills=3, seed=3)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_with_calls_pending_then_restart_delivers_everything_twelve_times(cell):
    _kills_with_calls_pending(cell, kills=12, seed=12)


# -- a POS that hangs -------------------------------------------------------------------------------------------


def _inspections_between(cell: Cell, t0: float, t1: float) -> int:
    return sum(1 for r in cell.plc.results() if t0 <= r.t_mono < t1)


def _hanging_pos(cell: Cell, window_s: float) -> None:
    cell.write_config(timeout_ms=500)
    cell.agent.start()
    cell.wait_for(lambda: len(cell.pos.applied()) >= 5, 90, "the first calls delivered")

    t0 = time.monotonic()
    time.sleep(window_s)
    t1 = time.monotonic()
    cell.pos.answer(200, hang_s=3600)  # accepts, reads, never answers (until the test ends)
    time.sleep(window_s)
    t2 = time.monotonic()
    healthy, hung = _inspections_between(cell, t0, t1), _inspections_between(cell, t1, t2)
    during = cell.calls()
    expected = window_s * 1000 / PERIOD_MS
    print(f"\ninspections in {window_s:.0f} s: {healthy} with the POS answering, {hung} with it hanging "
          f"(the trigger asks for {expected:.0f}); {during.pending} calls waiting at the end of the hang")
    assert hung >= 0.6 * healthy, "the line slowed down while the POS hung"
    assert during.pending >= 0.5 * hung, "the calls did not wait in the outbox while the POS hung"
    hanging = [r for r in cell.pos.requests() if r.t_mono >= t1 and r.status is None]
    assert len(hanging) >= 2, "the agent did not keep trying the hung POS"

    cell.pos.answer(200)
    final = cell.drain_and_stop(during.counters["produced"])
    assert_everything_reached_the_pos(cell, final)


@pytest.mark.timeout(240)
def test_a_hanging_pos_does_not_slow_the_line_short(cell):
    _hanging_pos(cell, window_s=5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_hanging_pos_does_not_slow_the_line_one_minute(cell):
    _hanging_pos(cell, window_s=60)
