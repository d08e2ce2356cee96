"""The durable outbox and the MQTT link it feeds: real SQLite files, a real mosquitto and an
independent recorder. Payloads are checked against the JSON Schemas in agent/deliver/schemas."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from agent.deliver.mqtt import MqttPublisher, MqttSettings, reconnect_delay
from agent.deliver.outbox import CROP, EVENT, Outbox, OutboxError, OutboxSettings, OutboxStore
from agent.events import Detection, Frame
from agent.lines.inspection import InspectionLine
from agent.postprocess.inspection_rule import DefectRule
from hw_sim.broker import MosquittoBroker
from hw_sim.netproxy import NetProxy
from hw_sim.subscriber import MqttRecorder, Received

DEVICE = "box1"
BASE = f"edge/{DEVICE}"
SCHEMAS = Path(__file__).resolve().parents[1] / "agent" / "deliver" / "schemas"


def schema(name: str) -> jsonschema.protocols.Validator:
    validator_cls = jsonschema.validators.validator_for(json.loads((SCHEMAS / f"{name}.json").read_text()))
    body = json.loads((SCHEMAS / f"{name}.json").read_text())
    validator_cls.check_schema(body)
    return validator_cls(body)


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


def assert_counts_add_up(store: OutboxStore) -> dict:
    """The counters add up, and agree with the rows actually in the file (read by a second connection)."""
    c = store.counters()
    for part in (c, c["events"], c["crops"]):
        assert part["produced"] == part["delivered"] + part["pending"] + part["evicted"] + part["expired"] + part["rejected"]
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as db:
        rows, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
    db.close()
    assert (rows, size) == (c["pending"], c["bytes"])
    assert kinds.get(EVENT, 0) == c["events"]["pending"] and kinds.get(CROP, 0) == c["crops"]["pending"]
    return c


@pytest.fixture
def make_store(tmp_path) -> Iterator:
    made: list[OutboxStore] = []

    def make(path: Path | None = None, **overrides) -> OutboxStore:
        store = OutboxStore(OutboxSettings(path=path or tmp_path / "outbox.db", **overrides))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def make_link() -> Iterator:
    made: list[MqttPublisher] = []

    def make(host: str, port: int, session: int = 0, **overrides) -> MqttPublisher:
        settings = MqttSettings(host=host, port=port, device_id=DEVICE,
                                **{"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **overrides})
        link = MqttPublisher(settings, version="9.9.9", session=session)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close(timeout_s=0.5)


@pytest.fixture
def make_outbox() -> Iterator:
    made: list[Outbox] = []

    def make(store: OutboxStore, link) -> Outbox:
        outbox = Outbox(store, link)
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        outbox.close(timeout_s=0.5)


def events(messages: list[Received], line: str | None = None) -> list[Received]:
    prefix = f"{BASE}/events/{line}" if line else f"{BASE}/events/"
    return [m for m in messages if m.topic.startswith(prefix)]


def crops(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.startswith(f"{BASE}/crops/")]


# -- the store on its own ----------------------------------------------------------------------


def test_rows_counters_and_line_sequence_numbers(make_store):
    store = make_store()
    for i in range(3):
        store.append("a", EVENT, "events/a", b'{"i":%d}' % i)
        store.append("a", CROP, f"crops/a/e{i}/0", b"\xff\xd8" + bytes(100), '[["label","dent"]]')
        store.append("b", EVENT, "events/b", b"{}")
    rows = store.fetch(0, 100)
    assert [(r.line, r.seq) for r in rows if r.line == "a"] == [("a", n) for n in range(1, 7)]
    assert [r.seq for r in rows if r.line == "b"] == [1, 2, 3]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    crop = rows[1]
    assert crop.content_type == "image/jpeg" and crop.user_properties() == [("label", "dent"), ("seq", "2")]
    assert rows[0].content_type == "application/json" and rows[0].user_properties() == [("seq", "1")]

    assert store.settle([(rows[0].id, "delivered"), (rows[1].id, "rejected")]) == 2
    assert store.settle([(rows[0].id, "delivered")]) == 0  # a second PUBACK for a deleted row counts nothing
    c = assert_counts_add_up(store)
    assert (c["produced"], c["delivered"], c["rejected"], c["pending"]) == (9, 1, 1, 7)
    assert store.integrity_check() == "ok"


def test_survives_reopen_with_counters_sequence_and_session(make_store, tmp_path):
    first = make_store()
    for i in range(5):
        first.append("a", EVENT, "events/a", b"{}")
    first.settle([(r.id, "delivered") for r in first.fetch(0, 2)])
    before = first.counters()
    assert first.session == 1
    first.close()

    second = make_store()
    assert second.session == 2
    assert second.counters() == before
    second.append("a", EVENT, "events/a", b"{}")
    assert [r.seq for r in second.fetch(0, 10)] == [3, 4, 5, 6]  # no sequence number is reused
    assert_counts_add_up(second)
    assert second.integrity_check() == "ok"


def test_full_outbox_evicts_crops_before_events_oldest_first(make_store):
    store = make_store(max_bytes=65536)
    event = b"e" * 300
    crop = b"\xff\xd8" + bytes(8000)
    for i in range(7):  # 7 crops (56 KB) and 7 events (2 KB): fits
        store.append("a", EVENT, "events/a", event)
        store.append("a", CROP, f"crops/a/e{i}/0", crop)
    assert store.counters()["evicted"] == 0
    store.append("a", EVENT, "events/a", event)
    store.append("a", CROP, "crops/a/e7/0", crop)  # over: the oldest crop goes, not an event
    c = assert_counts_add_up(store)
    assert c["crops"]["evicted"] == 1 and c["events"]["evicted"] == 0
    kept_crops = [r.topic for r in store.fetch(0, 100) if r.kind == CROP]
    assert kept_crops == [f"crops/a/e{i}/0" for i in range(1, 8)]

    for _ in range(250):  # 77 KB of events only: all crops go, then the oldest events
        store.append("a", EVENT, "events/a", event)
    c = assert_counts_add_up(store)
    assert c["crops"]["pending"] == 0 and c["crops"]["evicted"] == 8
    assert c["events"]["evicted"] > 0
    assert c["bytes"] <= 65536
    seqs = [r.seq for r in store.fetch(0, 1000)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the oldest events went; the newest stay
    assert store.integrity_check() == "ok"


def test_rows_older_than_their_lifetime_expire(make_store):
    now = [1_000_000.0]
    store = OutboxStore(OutboxSettings(path=make_store().path.with_name("aged.db"), max_age_s=3600,
                                       message_expiry_s=600), clock=lambda: now[0])
    try:
        store.append("a", EVENT, "events/a", b"{}")
        now[0] += 300
        store.append("a", EVENT, "events/a", b"{}")
        now[0] += 301  # the first is 601 s old: past the 600 s message expiry
        assert store.expire() == 1
        c = assert_counts_add_up(store)
        assert (c["expired"], c["pending"]) == (1, 1)
    finally:
        store.close()


def test_a_damaged_file_is_a_user_error_naming_it(tmp_path):
    bad = tmp_path / "outbox.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=str(bad)):
        OutboxStore(OutboxSettings(path=bad))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OutboxError, match=f"cannot create the outbox folder {blocked}.*outbox.path"):
        OutboxStore(OutboxSettings(path=blocked / "outbox.db"))
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(OutboxError, match="newer edge-agent"):
        OutboxStore(OutboxSettings(path=newer))


# -- the outbox feeding a real broker ------------------------------------------------------------


def test_drains_in_order_and_deletes_only_what_was_acknowledged(broker, recorder, make_store, make_link, make_outbox):
    rec = recorder(f"{BASE}/#")
    store = make_store(drain_rate_per_s=0)
    link = make_link(broker.host, broker.port, session=store.session)
    outbox = make_outbox(store, link)
    for i in range(200):  # committed before the link exists: all of it is backlog
        line = "a" if i % 2 else "b"
        outbox.publish_event(line, {"event_id": f"e{i}", "i": i})
        outbox.publish_crop(line, f"e{i}", 0, b"\xff\xd8jpeg", {"event_id": f"e{i}", "label": "dent"})
    assert assert_counts_add_up(store)["pending"] == 400
    link.start()
    outbox.start()
    msgs = rec.wait_for(lambda ms: len(events(ms)) + len(crops(ms)) >= 400, timeout=20)
    wait_until(lambda: store.counters()["pending"] == 0, what="all rows deleted")
    c = assert_counts_add_up(store)
    assert (c["produced"], c["delivered"]) == (400, 400)

    for line in ("a", "b"):
        ours = [m for m in msgs if m.topic.startswith((f"{BASE}/events/{line}", f"{BASE}/crops/{line}/"))]
        assert [int(m.user_properties["seq"]) for m in ours] == list(range(1, 201))  # per-line order
    crop = crops(msgs)[0]
    assert crop.content_type == "image/jpeg" and crop.payload == b"\xff\xd8jpeg"
    assert crop.user_properties["label"] == "dent"
    assert events(msgs)[0].content_type == "application/json"


def test_unacknowledged_rows_survive_a_restart(broker, recorder, make_store, make_link, make_outbox, tmp_path):
    store = make_store(drain_rate_per_s=0)
    link = make_link(broker.host, broker.port)
    outbox = make_outbox(store, link)
    link.start()
    outbox.start()
    wait_until(lambda: link.connected)
    broker.pause()  # the connection stays up; nothing is acknowledged any more
    try:
        for i in range(30):
            outbox.publish_event("a", {"event_id": f"e{i}"})
        wait_until(lambda: link.stats()["unacked"] == 30, what="all handed to the link")
        outbox.close(timeout_s=0.2)
        link.close(timeout_s=0.2)
        assert assert_counts_add_up(store)["pending"] == 30  # sent, but no PUBACK: still here
        store.close()
    finally:
        broker.resume()

    rec = recorder(f"{BASE}/events/#")
    again = make_store(drain_rate_per_s=0)
    assert again.counters()["pending"] == 30
    link2 = make_link(broker.host, broker.port, session=again.session)
    outbox2 = make_outbox(again, link2)
    link2.start()
    outbox2.start()
    rec.wait_for(lambda ms: {m.json()["event_id"] for m in ms} >= {f"e{i}" for i in range(30)}, timeout=10)
    wait_until(lambda: again.counters()["pending"] == 0)
    assert_counts_add_up(again)


def test_live_messages_go_first_while_the_backlog_drains_at_its_rate(broker, recorder, make_store, make_link,
                                                                    make_outbox):
    rec = recorder(f"{BASE}/events/#")
    store = make_store(drain_rate_per_s=40)
    link = make_link(broker.host, broker.port)
    outbox = make_outbox(store, link)
    for i in range(120):  # 3 s of backlog at 40/s
        outbox.publish_event("a", {"event_id": f"old{i}"})
    link.start()
    outbox.start()
    rec.wait_for(lambda ms: len(ms) >= 10, timeout=10)
    t_live = time.monotonic()
    for i in range(5):
        outbox.publish_event("a", {"event_id": f"live{i}"})
    msgs = rec.wait_for(lambda ms: sum(m.json()["event_id"].startswith("live") for m in ms) == 5, timeout=5)
    assert time.monotonic() - t_live < 1.0, "live events waited behind the backlog"
    old_so_far = sum(m.json()["event_id"].startswith("old") for m in msgs)
    assert old_so_far < 110, "the backlog was not rate limited"
    msgs = rec.wait_for(lambda ms: len(ms) >= 125, timeout=15)
    first, last = msgs[0].t_mono, msgs[-1].t_mono
    assert last - first > 2.0  # 120 at 40/s
    old = [m.json()["event_id"] for m in msgs if m.json()["event_id"].startswith("old")]
    live = [m.json()["event_id"] for m in msgs if m.json()["event_id"].startswith("live")]
    assert old == [f"old{i}" for i in range(120)] and live == [f"live{i}" for i in range(5)]
    # seq restores the production order the consumer could not see in arrival order
    by_seq = sorted(msgs, key=lambda m: int(m.user_properties["seq"]))
    assert [m.json()["event_id"] for m in by_seq] == old + live
    assert_counts_add_up(store)


def test_broker_outages_lose_nothing(tmp_path, make_store, make_link, make_outbox):
    """A short version of the acceptance test in tests/test_delivery_faults.py, on the outbox alone."""
    # A persistent broker and a recorder with a persistent session: nothing published while
    # the recorder reconnects after a restart is lost to it (as with a production broker).
    with MosquittoBroker(workdir=tmp_path / "mosquitto", persistent=True) as broker, \
            MqttRecorder(broker.host, broker.port, f"{BASE}/events/#", persistent_session=True) as rec:
        store = make_store(drain_rate_per_s=500)
        link = make_link(broker.host, broker.port)
        outbox = make_outbox(store, link)
        link.start()
        outbox.start()
        stop = threading.Event()
        produced: list[str] = []

        def produce() -> None:
            while not stop.is_set():
                event_id = f"e{len(produced)}"
                outbox.publish_event("a", {"event_id": event_id})
                produced.append(event_id)
                time.sleep(0.01)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            for _ in range(3):
                time.sleep(1.0)
                broker.stop()
                time.sleep(1.0)
                broker.start()
        finally:
            stop.set()
            producer.join()
        rec.wait_for(lambda ms: {m.json()["event_id"] for m in ms} >= set(produced), timeout=30)
        wait_until(lambda: store.counters()["pending"] == 0, what="outbox empty")
    c = assert_counts_add_up(store)
    assert c["produced"] == len(produced) == c["delivered"]
    assert c["evicted"] == c["expired"] == c["rejected"] == 0
    assert link.connections >= 4


# -- the link: session, will, reconnects ----------------------------------------------------------------


def test_reconnect_delay_doubles_up_to_the_max_with_jitter():
    assert reconnect_delay(0, 0.5, 30, rng=lambda: 0.0) == 0.5
    assert reconnect_delay(3, 0.5, 30, rng=lambda: 0.0) == 4.0
    assert reconnect_delay(10, 0.5, 30, rng=lambda: 0.0) == 30
    assert reconnect_delay(10, 0.5, 30, rng=lambda: 0.999) == pytest.approx(15.0, rel=0.01)
    delays = {round(reconnect_delay(2, 1, 30), 3) for _ in range(50)}
    assert len(delays) > 10 and all(2.0 <= d <= 4.0 for d in delays)


def test_persistent_session_and_last_will_with_session_counter(broker, recorder, make_link, caplog):
    caplog.set_level(logging.INFO, logger="agent.deliver.mqtt")
    status = recorder(f"{BASE}/status")
    with NetProxy(broker.host, broker.port) as proxy:
        link = make_link(proxy.host, proxy.port, session=7)
        link.start()
        wait_until(lambda: link.connected)
        proxy.drop()  # the connection dies without DISCONNECT: the broker publishes the will
        wait_until(lambda: not link.connected)
        msgs = status.wait_for(lambda ms: any(m.json()["state"] == "offline" for m in ms), timeout=5)
        proxy.pass_through()
        wait_until(lambda: link.connections == 2, what="reconnected")
        msgs = status.wait_for(lambda ms: [m.json()["state"] for m in ms] == ["online", "offline", "online"], timeout=5)
        link.close()
        status.wait_for(lambda ms: ms[-1].json()["state"] == "stopped", timeout=5)
        time.sleep(0.5)  # a Will published after "stopped" (an unclean disconnect) would arrive by now
        msgs = status.messages()
    validator = schema("status")
    for m in msgs:
        validator.validate(m.json())
        assert m.retain and m.json()["session"] == 7 and m.json()["version"] == "9.9.9"
    assert [m.json()["state"] for m in msgs] == ["online", "offline", "online", "stopped"]
    assert "ts" not in msgs[1].json()  # the will was written at connect time: it has no time of its own
    assert sum("session resumed" in r.getMessage() for r in caplog.records) == 1  # clean_start=False


def test_message_expiry_is_what_is_left_of_the_lifetime(broker, recorder, make_store, make_link, make_outbox):
    now = [time.time() - 600]  # the event was stored 10 minutes before the link came up
    rec = recorder(f"{BASE}/events/#")
    store = OutboxStore(OutboxSettings(path=make_store().path.with_name("expiry.db"), message_expiry_s=3600),
                        clock=lambda: now[0])
    try:
        link = make_link(broker.host, broker.port)
        outbox = make_outbox(store, link)
        outbox.publish_event("a", {"event_id": "x"})
        now[0] = time.time()
        link.start()
        outbox.start()
        (msg,) = rec.wait_for(lambda ms: len(ms) >= 1, timeout=10)
        assert 2990 <= msg.message_expiry_s <= 3000
    finally:
        outbox.close(0.5)
        store.close()


# -- payloads against their schemas ------------------------------------------------------------


class _StillCamera:
    def __init__(self):
        self._seq = 0

    def grab(self, after: float | None = None) -> Frame:
        self._seq += 1
        image = np.full((480, 640, 3), 128, np.uint8)
        return Frame("cam0", self._seq, image, time.monotonic(), time.time())


class _OneDefectDetector:
    last_infer_ms = 3.0

    def detect(self, image, conf_threshold: float) -> list[Detection]:
        return [Detection(1, "scratch", 0.91, (100.0, 120.0, 180.0, 150.0))]


def test_real_payloads_match_their_json_schemas(broker, recorder, make_store, make_link, make_outbox):
    rec = recorder(f"{BASE}/#")
    store = make_store(stats_interval_s=0.5)
    link = make_link(broker.host, broker.port, session=store.session)
    outbox = make_outbox(store, link)
    link.start()
    outbox.start()
    line = InspectionLine("inspect", DEVICE, _StillCamera(), _OneDefectDetector(), DefectRule(0.4),
                          plc=None, publisher=outbox, model_name="defects:x.xml")
    line.start()
    try:
        for _ in range(3):
            line.on_trigger(source="interval")
        msgs = rec.wait_for(lambda ms: len(events(ms)) >= 3 and len(crops(ms)) >= 3
                            and any(m.topic == f"{BASE}/stats" for m in ms), timeout=10)
    finally:
        line.stop()

    for m in events(msgs):
        schema("event").validate(m.json())
    for m in crops(msgs):
        assert m.payload[:2] == b"\xff\xd8"
        schema("crop").validate(m.user_properties)
    for m in msgs:
        if m.topic == f"{BASE}/status":
            schema("status").validate(m.json())
    stats = [m.json() for m in msgs if m.topic == f"{BASE}/stats"]
    for body in stats:
        schema("stats").validate(body)
    assert stats[-1]["device_id"] == DEVICE and stats[-1]["session"] == store.session
    # A schema that allows anything would pass the above: make sure it refuses a broken payload.
    broken = {**events(msgs)[0].json(), "result": "maybe"}
    with pytest.raises(jsonschema.ValidationError):
        schema("event").validate(broken)
