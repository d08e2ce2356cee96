"""Store-and-forward under faults, against a real `edge-agent run` process.

The agent inspects on an interval trigger (no GPIO needed) with the simulated camera and PLC;
a real mosquitto plays the broker and an independent recorder with a persistent session plays
the cloud. The broker is persistent too, as in production: otherwise anything the agent
publishes in the moment between a broker restart and the recorder's resubscription would be
acknowledged to the agent and yet never reach the recorder.

The full-length acceptance runs (2 minutes of outages, 20 kills) are marked slow; the default
suite runs shorter versions of the same tests. Also here: traffic cut between agent and broker
with hw_sim.netproxy (stall and drop), on the outbox and link in-process.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from agent.deliver.mqtt import MqttPublisher, MqttSettings
from agent.deliver.outbox import Outbox, OutboxSettings, OutboxStore
from hw_sim.agent_process import AgentProcess
from hw_sim.broker import MosquittoBroker
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.harness import DEFAULT_MODEL, DEVICE_ID, LINE, agent_config
from hw_sim.netproxy import NetProxy
from hw_sim.plc import SimPlc
from hw_sim.scene import PartRenderer
from hw_sim.subscriber import MqttRecorder, Received

BASE = f"edge/{DEVICE_ID}"
PERIOD_MS = 100  # one inspection every 100 ms
EVENT, CROP = 0, 1


# -- a cell around a real agent process ------------------------------------------------------------


def _defective_part_jpeg() -> bytes:
    renderer = PartRenderer(seed=11, defect_rate=1.0)
    part = max((renderer.render() for _ in range(8)), key=lambda p: len(p.defects))
    return encode_jpeg(part.image)


@dataclass
class Cell:
    """Broker, PLC, camera and recorder stay up across agent restarts; the agent comes and goes."""

    workdir: Path
    broker: MosquittoBroker
    plc: SimPlc
    camera: SimCamera
    recorder: MqttRecorder
    outbox_path: Path
    config_path: Path = field(init=False)
    agent: AgentProcess = field(init=False)

    def __post_init__(self) -> None:
        self.agent = AgentProcess(self.workdir)

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.agent.proc

    def write_config(self, **outbox) -> None:
        config = agent_config(self.broker, self.plc, self.camera, DEFAULT_MODEL, 0.4, outbox=self.outbox_path)
        config["log_level"] = "INFO"
        config["lines"][LINE]["trigger"] = {"type": "interval", "period_ms": PERIOD_MS}
        config["outbox"].update({"stats_interval_s": 1, **outbox})
        self.config_path = self.agent.config_path = self.workdir / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start_agent(self) -> subprocess.Popen:
        return self.agent.start()

    def kill_agent(self) -> None:
        self.agent.kill()

    def stop_agent(self) -> int:
        """SIGTERM and wait: the line stops, the outbox waits for its acks, the link says stopped."""
        return self.agent.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.agent.log_tail(lines)

    def wait_online(self, timeout: float = 60) -> None:
        """Until this run's birth message arrives."""
        since = self.agent.started_at
        try:
            self.recorder.wait_for(lambda ms: any(
                m.topic == f"{BASE}/status" and m.t_mono >= since and m.json()["state"] == "online"
                for m in ms), timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"the agent did not come online; log:\n{self.log_tail()}") from None

    # -- what arrived ---------------------------------------------------------------------

    def events(self) -> list[Received]:
        return self.recorder.messages(f"{BASE}/events/")

    def crops(self) -> list[Received]:
        return self.recorder.messages(f"{BASE}/crops/")


@pytest.fixture
def cell(tmp_path) -> Iterator[Cell]:
    if not (DEFAULT_MODEL / "inspection-detector.xml").exists():
        pytest.fail(f"the shipped model {DEFAULT_MODEL} is missing: build it (see the README, Models)")
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto", persistent=True)
    broker.start()
    stack: list = [broker.stop]
    try:
        plc = SimPlc()
        plc.start()
        stack.append(plc.stop)
        camera = SimCamera()
        camera.start()
        stack.append(camera.stop)
        camera.show(_defective_part_jpeg())
        recorder = MqttRecorder(broker.host, broker.port, f"{BASE}/#", persistent_session=True)
        recorder.start()
        stack.append(recorder.stop)
        the_cell = Cell(tmp_path, broker, plc, camera, recorder, tmp_path / "state" / "outbox.db")
        stack.append(the_cell.kill_agent)
        yield the_cell
    finally:
        while stack:
            stack.pop()()


@dataclass
class Snapshot:
    integrity: str
    counters: dict[int, dict[str, int]]  # kind -> field -> value, summed over lines
    rows: int
    event_ids: set[str]  # of the events still waiting in the file
    inspection_ids: set[int]
    crop_keys: set[tuple[str, str]]

    def total(self, name: str) -> int:
        return sum(c[name] for c in self.counters.values())

    def pending(self, kind: int | None = None) -> int:
        kinds = [kind] if kind is not None else list(self.counters)
        return sum(self.counters[k]["produced"] - sum(self.counters[k][o] for o in
                   ("delivered", "evicted", "expired", "rejected")) for k in kinds if k in self.counters)

    def assert_adds_up(self) -> None:
        assert self.integrity == "ok", self.integrity
        assert self.rows == self.pending(), f"{self.rows} rows but the counters say {self.pending()} pending"


def snapshot(path: Path) -> Snapshot:
    """Read the outbox file the way an auditor would: one read transaction, integrity check first."""
    db = sqlite3.connect(path, timeout=10)
    try:
        integrity = "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        db.execute("BEGIN")
        counters: dict[int, dict[str, int]] = {}
        for kind, *values in db.execute(
            "SELECT kind, SUM(produced), SUM(delivered), SUM(evicted), SUM(expired), SUM(rejected) "
            "FROM counters GROUP BY kind"
        ):
            counters[kind] = dict(zip(("produced", "delivered", "evicted", "expired", "rejected"), values))
        event_ids, inspection_ids, crop_keys, rows = set(), set(), set(), 0
        for kind, topic, payload in db.execute("SELECT kind, topic, payload FROM messages"):
            rows += 1
            if kind == EVENT:
                event = json.loads(payload)
                event_ids.add(event["event_id"])
                inspection_ids.add(event["inspection_id"])
            else:
                _, _line, event_id, index = topic.split("/")
                crop_keys.add((event_id, index))
        db.execute("COMMIT")
    finally:
        db.close()
    return Snapshot(integrity, counters, rows, event_ids, inspection_ids, crop_keys)


def received_ids(messages: list[Received]) -> Counter:
    return Counter(m.json()["event_id"] for m in messages)


def assert_duplicates_only_repeat(messages: list[Received], key) -> None:
    """A duplicate is the same message again (same payload), never a different one under the same id."""
    first: dict = {}
    for m in messages:
        first.setdefault(key(m), m.payload)
        assert first[key(m)] == m.payload, f"two different messages under {key(m)}"


def crop_key(m: Received) -> tuple[str, str]:
    _, _, _, _line, event_id, index = m.topic.split("/")
    return event_id, index


# -- broker outages ---------------------------------------------------------------------------------


def _broker_outages(cell: Cell, duration_s: float, seed: int) -> None:
    rng = random.Random(seed)
    cell.write_config(drain_rate_per_s=200)
    cell.start_agent()
    cell.wait_online()
    t_end = time.monotonic() + duration_s
    outages = 0
    while time.monotonic() < t_end:
        time.sleep(rng.uniform(2.0, 4.0))
        cell.broker.stop()
        outages += 1
        time.sleep(rng.uniform(2.0, 4.0))
        cell.broker.start()
    t_return = time.monotonic()

    # Everything inspected before the broker's return reaches the recorder within 60 s of it.
    produced_before = {r.inspection_id for r in cell.plc.results() if r.t_mono < t_return}
    deadline = t_return + 60
    while True:
        arrived = {m.json()["inspection_id"] for m in cell.events()}
        if produced_before <= arrived:
            break
        if time.monotonic() > deadline:
            missing = sorted(produced_before - arrived)
            raise AssertionError(f"{len(missing)} events still missing 60 s after the broker's return: "
                                 f"{missing[:20]}; agent log:\n{cell.log_tail()}")
        time.sleep(0.2)
    drained_in = time.monotonic() - t_return

    assert cell.stop_agent() == 0, cell.log_tail()
    snap = snapshot(cell.outbox_path)
    snap.assert_adds_up()
    events = cell.events()
    ids = received_ids(events)
    assert snap.total("evicted") == snap.total("expired") == snap.total("rejected") == 0
    # Every event committed to the outbox arrived at least once; a clean stop flushes, so at most
    # the last few wait in the file for the next start (and count as not yet arrived).
    assert snap.counters[EVENT]["produced"] == len(set(ids) | snap.event_ids)
    assert snap.pending() <= 10
    # ... and every inspection the PLC saw has its event.
    inspections = {r.inspection_id for r in cell.plc.results()}
    assert inspections <= {m.json()["inspection_id"] for m in events} | snap.inspection_ids
    assert_duplicates_only_repeat(events, lambda m: m.json()["event_id"])
    assert_duplicates_only_repeat(cell.crops(), crop_key)
    print(f"\n{outages} outages over {duration_s:.0f} s; {len(inspections)} inspections, {len(ids)} events "
          f"({sum(ids.values()) - len(ids)} duplicates), {len(cell.crops())} crops; "
          f"backlog drained {drained_in:.1f} s after the broker's return")


@pytest.mark.timeout(180)
def test_broker_outages_short(cell):
    _broker_outages(cell, duration_s=20, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_broker_outages_two_minutes(cell):
    _broker_outages(cell, duration_s=120, seed=2)


# -- SIGKILL at random points ----------------------------------------------------------------------------


def _random_kills(cell: Cell, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    cell.write_config(drain_rate_per_s=100)
    ever_committed: set[str] = set()
    for n in range(kills):
        # Some runs start offline and meet the broker half way: kills land while producing,
        # while draining a backlog, during start-up and while the file is being opened.
        offline = n % 3 == 1
        if offline:
            cell.broker.stop()
        cell.start_agent()
        if offline:
            time.sleep(rng.uniform(2.0, 5.0))
            cell.broker.start()
        time.sleep(rng.uniform(0.5, 6.0))
        cell.kill_agent()
        snap = snapshot(cell.outbox_path) if cell.outbox_path.exists() else None
        if snap is not None:
            snap.assert_adds_up()  # integrity_check is ok, the counters match the rows
            ever_committed |= snap.event_ids

    # A last, clean run drains whatever the kills left behind.
    cell.start_agent()
    cell.wait_online()
    deadline = time.monotonic() + 60
    while snapshot(cell.outbox_path).pending() > 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cell.stop_agent() == 0, cell.log_tail()
    final = snapshot(cell.outbox_path)
    final.assert_adds_up()
    assert final.pending() == 0, f"{final.pending()} messages left after a clean stop"

    events, crops = cell.events(), cell.crops()
    ids = received_ids(events)
    produced = final.counters[EVENT]["produced"]
    assert final.total("evicted") == final.total("expired") == final.total("rejected") == 0
    # Nothing committed is lost: as many distinct events arrived as were ever committed, and
    # every one seen waiting in the file after a kill is among them.
    assert len(ids) == produced, f"{produced} events committed, {len(ids)} distinct ones arrived"
    assert ever_committed <= set(ids)
    assert len({crop_key(m) for m in crops}) == final.counters[CROP]["produced"]
    assert_duplicates_only_repeat(events, lambda m: m.json()["event_id"])
    assert_duplicates_only_repeat(crops, crop_key)
    # each start is a new session, announced in the birth message; the kills left the Will behind
    statuses = [m.json() for m in cell.recorder.messages(f"{BASE}/status")]
    births = [s["session"] for s in statuses if s["state"] == "online"]
    assert births == sorted(births)
    assert any(s["state"] == "offline" for s in statuses)
    print(f"\n{kills} kills; {produced} events committed, {sum(ids.values())} event messages received "
          f"({sum(ids.values()) - len(ids)} duplicates); {len(crops)} crop messages; sessions {births[0]}..{births[-1]}")


@pytest.mark.timeout(240)
def test_sigkill_at_random_points_short(cell):
    _random_kills(cell, kills=5, seed=5)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_points_twenty_times(cell):
    _random_kills(cell, kills=20, seed=20)


# -- outbox full while offline ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_outbox_full_while_offline_evicts_images_first_and_keeps_inspecting(cell):
    cell.broker.stop()
    cell.write_config(max_bytes=256 * 1024, drain_rate_per_s=0)
    cell.start_agent()
    deadline = time.monotonic() + 60
    while not cell.outbox_path.exists() or snapshot(cell.outbox_path).total("evicted") == 0:
        assert cell.proc.poll() is None, cell.log_tail()
        assert time.monotonic() < deadline, f"the outbox never filled; log:\n{cell.log_tail()}"
        time.sleep(0.5)
    inspected_when_full = len(cell.plc.results())
    time.sleep(3.0)
    full = snapshot(cell.outbox_path)
    full.assert_adds_up()
    assert len(cell.plc.results()) >= inspected_when_full + 15, "the line stopped inspecting when the outbox filled"
    assert full.counters[CROP]["evicted"] > 0
    assert full.counters[EVENT]["evicted"] == 0, "an event was evicted while crops could have gone"

    cell.broker.start()
    cell.wait_online()
    time.sleep(2.0)
    assert cell.stop_agent() == 0, cell.log_tail()
    final = snapshot(cell.outbox_path)
    final.assert_adds_up()
    ids = received_ids(cell.events())
    for kind in (EVENT, CROP):
        c = final.counters[kind]
        assert c["produced"] == c["delivered"] + final.pending(kind) + c["evicted"] + c["expired"] + c["rejected"]
    assert final.counters[EVENT]["evicted"] == 0
    # every event arrived (or, for the last few, still waits in the file), though crops were evicted
    assert final.counters[EVENT]["produced"] == len(set(ids) | final.event_ids)
    inspections = {r.inspection_id for r in cell.plc.results()}
    assert inspections <= {m.json()["inspection_id"] for m in cell.events()} | final.inspection_ids


# -- traffic cut between agent and broker (in-process, no model needed) -----------------------------------------------


def test_stalled_and_dropped_uplink_lose_nothing(tmp_path):
    with MosquittoBroker(workdir=tmp_path / "mosquitto") as broker, \
            NetProxy(broker.host, broker.port) as proxy, \
            MqttRecorder(broker.host, broker.port, "edge/box/#") as rec:
        store = OutboxStore(OutboxSettings(path=tmp_path / "outbox.db", drain_rate_per_s=0))
        link = MqttPublisher(MqttSettings(host=proxy.host, port=proxy.port, device_id="box", keepalive_s=2,
                                          reconnect_min_s=0.2, reconnect_max_s=1.0), session=store.session)
        outbox = Outbox(store, link)
        stop = threading.Event()
        produced: list[str] = []

        def produce() -> None:
            while not stop.is_set():
                produced.append(f"e{len(produced)}")
                outbox.publish_event("a", {"event_id": produced[-1]})
                outbox.publish_crop("a", produced[-1], 0, b"\xff\xd8" + os.urandom(2000), {"n": len(produced)})
                time.sleep(0.02)

        producer = threading.Thread(target=produce)
        try:
            link.start()
            outbox.start()
            producer.start()
            time.sleep(1.0)
            proxy.stall()  # a hung path: the link notices only by its keepalive
            time.sleep(5.0)
            assert not link.connected, "a stalled link was not detected by the keepalive"
            proxy.pass_through()
            time.sleep(2.0)
            proxy.drop()  # a cut: connections reset, new ones refused
            time.sleep(2.0)
            proxy.pass_through()
            time.sleep(1.0)
        finally:
            stop.set()
            producer.join()
        try:
            expected = set(produced)
            rec.wait_for(lambda ms: {m.json()["event_id"] for m in ms if "/events/" in m.topic} >= expected, timeout=30)
            deadline = time.monotonic() + 10
            while store.counters()["pending"] and time.monotonic() < deadline:
                time.sleep(0.05)
            c = store.counters()
            assert c["pending"] == 0 and c["delivered"] == c["produced"] == 2 * len(produced)
            assert link.connections >= 3
        finally:
            outbox.close(0.5)
            link.close(0.5)
            store.close()
