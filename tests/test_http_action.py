"""HTTP actions against a real HTTP server on loopback (hw_sim.pos.SimPos) and a real outbox
file: calls kept in the file until answered, retries with backoff and Retry-After, one
idempotency key per event, refusals, expiry, bounds, restarts, and a line that never waits.

The agent-process fault tests (SIGKILL, a hanging POS under a running line) are in
test_http_faults.py."""

from __future__ import annotations

import email.utils
import json
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from agent.act.http import HttpAction, HttpActionSettings, PublisherWithHttp, retry_after_s
from agent.config.schema import InspectionLine, WebhookConfig
from agent.deliver.mqtt import MqttPublisher, MqttSettings
from agent.deliver.outbox import Outbox, OutboxSettings, OutboxStore
from hw_sim.pos import SimPos

pytestmark = pytest.mark.timeout(90)

LINE = "inspect"
TARGET = f"{LINE}/pos"
SCHEMAS = Path(__file__).resolve().parents[1] / "agent" / "deliver" / "schemas"


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


def _event(n: int, result: str = "reject") -> dict:
    return {"event_id": f"evt-{n:04d}", "result": result, "inspection_id": n, "line": LINE}


class Cell:
    """An outbox file, its (unstarted) MQTT link, and HTTP actions publishing through it."""

    def __init__(self, path: Path):
        self.path = path
        self.actions: list[HttpAction] = []
        self.open()

    def open(self) -> None:
        self.store = OutboxStore(OutboxSettings(path=self.path))
        self.link = MqttPublisher(MqttSettings(host="127.0.0.1", device_id="box"), session=self.store.session)
        self.outbox = Outbox(self.store, self.link)

    def action(self, url: str, target: str = TARGET, start: bool = True, **settings) -> HttpAction:
        settings = {"timeout_s": 0.5, "backoff_s": 0.05, "backoff_max_s": 0.4, **settings}
        action = HttpAction(target, HttpActionSettings(url, **settings), self.store.http)
        self.actions.append(action)
        if start:
            action.start()
        return action

    def publisher(self) -> PublisherWithHttp:
        return PublisherWithHttp(self.outbox, self.actions)

    def close(self) -> None:
        for action in self.actions:
            action.close(0.5)
        self.actions = []
        self.outbox.close(0.1)
        self.store.close()

    def rows(self, target: str = TARGET) -> list[tuple[str, int]]:
        """(event_id, attempts) of the calls in the file, read by a second connection."""
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT event_id, attempts FROM http_calls WHERE target = ? ORDER BY id",
                              (target,)).fetchall()
        db.close()
        return rows

    def assert_adds_up(self, target: str = TARGET) -> dict:
        c = self.store.http.counters(target)
        assert c["produced"] == c["delivered"] + c["pending"] + c["refused"] + c["expired"] + c["evicted"], c
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            rows, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM http_calls WHERE target = ?",
                                    (target,)).fetchone()
            (on_disk,) = db.execute("SELECT produced FROM http_counters WHERE target = ?", (target,)).fetchone()
        db.close()
        assert (rows, size) == (c["pending"], c["bytes"]) and on_disk == c["produced"]
        return c


@pytest.fixture
def cell(tmp_path) -> Iterator[Cell]:
    the_cell = Cell(tmp_path / "outbox.db")
    try:
        yield the_cell
    finally:
        the_cell.close()


@pytest.fixture
def pos() -> Iterator[SimPos]:
    with SimPos() as server:
        yield server


def assert_duplicates_only_repeat(pos: SimPos) -> None:
    """Every attempt with one key carries the same body: a repeat, never a different call."""
    bodies: dict[str, bytes] = {}
    for request in pos.requests():
        assert bodies.setdefault(request.key, request.body) == request.body, f"two bodies under {request.key}"


# -- outage, recovery, restart ------------------------------------------------------------------------


def test_outage_then_recovery_delivers_everything(cell, pos):
    pos.stop()  # down: connections refused
    action = cell.action(pos.url)
    publisher = cell.publisher()
    events = [_event(n) for n in range(40)]
    for event in events:
        publisher.publish_event(LINE, event)
    wait_until(lambda: action.retries >= 3, what="retries while the POS is down")
    c = cell.assert_adds_up()
    assert c["produced"] == c["pending"] == 40 and c["delivered"] == 0
    assert "Connection refused" in action.stats()["last_error"]
    assert action.stats()["failing"]
    # the POS was probed, not flooded: one attempt per backoff, not one per call
    assert action.attempts < 40

    pos.start()
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 40, what="all delivered after recovery")
    c = cell.assert_adds_up()
    assert c["pending"] == c["refused"] == c["expired"] == c["evicted"] == 0
    applied = pos.applied()
    assert set(applied) == {e["event_id"] for e in events}
    assert all(n == 1 for n in applied.values())  # the POS was down: nothing reached it twice
    for request in pos.requests():
        assert request.json() == next(e for e in events if e["event_id"] == request.key)
        assert request.path == "/events"
    assert not action.stats()["failing"] and cell.rows() == []
    # the event went to MQTT too, in the same commit
    assert cell.store.counters()["events"]["produced"] == 40


def test_calls_pending_at_a_stop_are_sent_after_the_next_start(cell, pos):
    pos.answer(503)
    action = cell.action(pos.url)
    publisher = cell.publisher()
    for n in range(10):
        publisher.publish_event(LINE, _event(n))
    wait_until(lambda: action.retries >= 1)
    cell.close()  # pending calls stay in the file

    pos.answer(200)
    cell.open()
    assert cell.store.http.counters(TARGET)["pending"] == 10
    assert cell.rows()[0][1] >= 1  # the failed attempt is on record
    cell.action(pos.url)
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 10)
    cell.assert_adds_up()
    assert set(pos.applied()) == {f"evt-{n:04d}" for n in range(10)}
    assert_duplicates_only_repeat(pos)


# -- retries: backoff, Retry-After, one key ------------------------------------------------------------


def test_5xx_and_timeouts_are_retried_with_growing_backoff_and_the_same_key(cell, pos):
    pos.script(503, 500, 502, 408)
    action = cell.action(pos.url, backoff_s=0.1, backoff_max_s=5.0)
    cell.publisher().publish_event(LINE, _event(1))
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 1)
    attempts = pos.attempts("evt-0001")
    assert [a.status for a in attempts] == [503, 500, 502, 408, 200]
    assert {a.key for a in attempts} == {"evt-0001"} and len({a.body for a in attempts}) == 1
    gaps = [b.t_mono - a.t_mono for a, b in zip(attempts, attempts[1:])]
    print(f"\ngaps between attempts: {[round(g, 3) for g in gaps]} s (backoff 0.1 s doubling, half jittered)")
    # Each wait is at least half of 0.1 * 2^n (equal jitter); a loaded machine only adds to it.
    for n, gap in enumerate(gaps):
        assert gap >= 0.1 * 2**n / 2 * 0.95, f"attempt {n + 2} came {gap:.3f} s after the previous one"
    assert action.retries == 4 and action.stats()["last_status"] == 200

    # A POS that hangs past the timeout: retried, with the same key.
    pos.answer(200, hang_s=1.5)
    cell.publisher().publish_event(LINE, _event(2))
    wait_until(lambda: action.retries >= 5)
    assert "no answer" in action.stats()["last_error"]
    pos.answer(200)
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 2)
    wait_until(lambda: len(pos.attempts("evt-0002")) >= 2, what="the hung attempt on record")
    assert {a.key for a in pos.attempts("evt-0002")} == {"evt-0002"}
    assert_duplicates_only_repeat(pos)


def test_retry_after_is_honoured(cell, pos):
    pos.script((429, 1), (503, 1))
    action = cell.action(pos.url, backoff_s=0.02, backoff_max_s=0.05)
    publisher = cell.publisher()
    publisher.publish_event(LINE, _event(1))
    publisher.publish_event(LINE, _event(2))
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 2)
    requests = pos.requests()
    assert [r.status for r in requests] == [429, 503, 200, 200]
    gaps = [b.t_mono - a.t_mono for a, b in zip(requests, requests[1:])]
    print(f"\ngaps after 429 / 503 with Retry-After: 1: {[round(g, 3) for g in gaps[:2]]} s (backoff alone: 0.05 s)")
    # Retry-After holds back the whole target, not just the call it came with.
    assert gaps[0] >= 0.99 and gaps[1] >= 0.99
    assert action.retries == 2


def test_retry_after_forms():
    now = time.time()
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s(" 3 ", now) == 3.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_s(http_date, now) <= 31
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after_s(None, now) is None and retry_after_s("soon", now) is None and retry_after_s("-5", now) is None


# -- answers that are not retried ---------------------------------------------------------------------------


def test_non_retryable_4xx_and_redirects_are_counted_refused_and_dropped(cell, pos):
    pos.script(400, 422, 302)
    action = cell.action(pos.url)
    publisher = cell.publisher()
    for n in range(5):
        publisher.publish_event(LINE, _event(n))
    publisher.publish_event(LINE, _event(99, "pass"))
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 3)
    c = cell.assert_adds_up()
    assert (c["refused"], c["delivered"], c["pending"]) == (3, 3, 0)
    requests = pos.requests()
    assert len(requests) == 6  # each refused call was tried once, never again
    assert [r.status for r in requests[:3]] == [400, 422, 302]
    assert action.retries == 0 and "HTTP 302 redirect" in action.stats()["last_error"]


def test_only_the_results_an_action_wants_become_calls(cell, pos):
    rejects = cell.action(pos.url, target=f"{LINE}/rejects", on=frozenset({"reject", "no_read"}))
    everything = cell.action(pos.url, target=f"{LINE}/all")
    publisher = cell.publisher()
    for n, result in enumerate(["pass", "reject", "no_read", "pass"]):
        publisher.publish_event(LINE, _event(n, result))
    wait_until(lambda: rejects.stats()["delivered"] == 2 and everything.stats()["delivered"] == 4)
    assert cell.store.http.counters(f"{LINE}/rejects")["produced"] == 2
    assert sorted(r.key for r in pos.requests()) == sorted(["evt-0000", "evt-0001", "evt-0001", "evt-0002",
                                                           "evt-0002", "evt-0003"])


# -- expiry and bounds -------------------------------------------------------------------------------


def test_calls_older_than_max_age_expire_counted(cell, pos):
    pos.answer(503)
    action = cell.action(pos.url, max_age_s=0.6)
    for n in range(5):
        cell.publisher().publish_event(LINE, _event(n))
    wait_until(lambda: cell.store.http.counters(TARGET)["expired"] == 5, what="expired")
    c = cell.assert_adds_up()
    assert c["pending"] == 0 and c["delivered"] == 0 and action.attempts >= 1


def test_bounds_evict_the_oldest_calls_counted(cell, pos):
    # The senders start after the publishing: a call a sender has in flight when it is evicted can
    # still arrive, and this test is about which calls the bounds keep.
    pos.stop()
    first = cell.action(pos.url, max_pending=5, start=False)
    publisher = cell.publisher()
    for n in range(12):
        publisher.publish_event(LINE, _event(n))
    c = cell.assert_adds_up()
    assert (c["produced"], c["evicted"], c["pending"]) == (12, 7, 5)
    assert [key for key, _ in cell.rows()] == [f"evt-{n:04d}" for n in range(7, 12)]

    size = len(json.dumps(_event(12), separators=(",", ":")))  # as large as each of the four below
    second = cell.action(pos.url + "/small", target=f"{LINE}/small", max_bytes=3 * size, start=False)
    for n in range(12, 16):
        publisher.publish_event(LINE, _event(n))
    small = cell.assert_adds_up(f"{LINE}/small")
    assert (small["produced"], small["evicted"], small["pending"]) == (4, 1, 3)
    assert small["bytes"] <= 3 * size

    assert cell.assert_adds_up()["evicted"] == 11  # the first action took the four too: it keeps 11-15

    pos.start()
    first.start()
    second.start()
    wait_until(lambda: cell.store.http.counters(TARGET)["delivered"] == 5
               and cell.store.http.counters(f"{LINE}/small")["delivered"] == 3)
    # What each action kept reached the POS, and nothing it evicted did. At least once, not exactly:
    # on a loaded machine an answer can miss the 0.5 s timeout, and the retry repeats the same key.
    delivered = {path: {r.key for r in pos.requests() if r.path == path and r.status is not None and r.status < 300}
                 for path in ("/events", "/events/small")}
    assert delivered == {"/events": {f"evt-{n:04d}" for n in range(11, 16)},
                         "/events/small": {f"evt-{n:04d}" for n in (13, 14, 15)}}


# -- the line's side -----------------------------------------------------------------------------------------


def test_an_event_and_its_calls_commit_together(cell, pos):
    pos.stop()
    cell.action(pos.url)
    publisher = cell.publisher()
    publisher.publish_event(LINE, _event(1))
    assert cell.store.counters()["events"]["pending"] == 1 and cell.store.http.counters(TARGET)["pending"] == 1
    # The calls' table breaks under the running agent: the event is not committed without its call.
    with sqlite3.connect(cell.path) as other:
        other.execute("DROP TABLE http_calls")
    other.close()
    publisher.publish_event(LINE, _event(2))
    assert cell.outbox.stats()["write_errors"] == 1
    assert cell.store.counters()["events"]["produced"] == 1
    with sqlite3.connect(f"file:{cell.path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
    db.close()


def test_a_hanging_pos_never_blocks_the_line(cell, pos):
    pos.answer(200, hang_s=30)
    hung = cell.action(pos.url, timeout_s=0.3)
    dead = cell.action("http://127.0.0.1:9/events", target=f"{LINE}/dead", timeout_s=0.3)
    publisher = cell.publisher()
    took = []
    for n in range(200):
        started = time.perf_counter()
        publisher.publish_event(LINE, _event(n))
        took.append((time.perf_counter() - started) * 1000)
    wait_until(lambda: hung.retries >= 1 and dead.retries >= 1)
    took.sort()
    p50, p99 = statistics.median(took), took[int(0.99 * len(took))]
    print(f"\npublish_event (MQTT event + 2 HTTP calls, one commit) with a hung and a dead POS: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {took[-1]:.2f} ms")
    assert cell.store.http.counters(TARGET)["pending"] == 200
    assert p99 < 100, "the line waited on HTTP"  # a local commit; a 0.3 s POST timeout would show
    assert "no answer" in hung.stats()["last_error"]
    started = time.monotonic()
    hung.close(timeout_s=0.3)
    assert time.monotonic() - started < 2.0, "close() waited for the hung POS"
    assert cell.store.http.counters(TARGET)["pending"] == 200  # the call in flight was not settled


def test_stats_add_up_and_match_the_stats_schema(cell, pos):
    pos.script(400)
    action = cell.action(pos.url)
    for n in range(3):
        cell.publisher().publish_event(LINE, _event(n))
    wait_until(lambda: action.stats()["delivered"] == 2)
    stats = cell.outbox.stats()
    assert stats["http"][TARGET] == {"produced": 3, "delivered": 2, "pending": 0, "refused": 1, "expired": 0,
                                     "evicted": 0, "bytes": 0}
    body = {"schema": 1, "device_id": "box", "session": cell.store.session, "ts": time.time(),
            "outbox": stats, "mqtt": cell.link.stats()}
    schema = json.loads((SCHEMAS / "stats.json").read_text())
    jsonschema.validate(body, schema)
    stats["http"][TARGET]["retries"] = 1  # the schema refuses what it does not describe
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    health = action.stats()
    assert health["url"] == pos.url and health["oldest_age_s"] is None and health["attempts"] == 3


# -- config ---------------------------------------------------------------------------------------------------


def test_webhook_config():
    hook = WebhookConfig(url="http://pos.local/api")
    assert (hook.name_at(2), hook.max_age_h, hook.max_pending) == ("webhook2", 24.0, 10000)
    with pytest.raises(ValidationError, match="retries is gone"):
        WebhookConfig(url="http://pos.local/api", retries=3)
    with pytest.raises(ValidationError, match="below backoff_ms"):
        WebhookConfig(url="http://pos.local/api", backoff_ms=5000, backoff_max_ms=1000)
    line = {"camera": "cam0", "model": "m", "trigger": {"type": "interval", "period_ms": 100}}
    with pytest.raises(ValidationError, match="'pos' is used twice"):
        InspectionLine(**line, webhooks=[{"url": "http://a/", "name": "pos"}, {"url": "http://b/", "name": "pos"}])
    with pytest.raises(ValidationError, match="'webhook1' is used twice"):
        InspectionLine(**line, webhooks=[{"url": "http://a/", "name": "webhook1"}, {"url": "http://b/"}])


def test_an_outbox_file_from_before_the_http_calls_opens_with_its_messages(tmp_path):
    from agent.deliver.outbox import _SCHEMA

    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    old.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = 1; COMMIT;")  # schema 1: MQTT messages only
    old.execute("INSERT INTO messages (id, line, seq, kind, created, size, topic, payload) "
                "VALUES (1, 'inspect', 1, 0, ?, 10, 'events/inspect', x'7b7d')", (time.time(),))
    old.execute("INSERT INTO counters (line, kind, produced, bytes) VALUES ('inspect', 0, 1, 10)")
    old.commit()
    old.close()
    store = OutboxStore(OutboxSettings(path=path))
    try:
        assert store.counters()["pending"] == 1 and store.http.counters() == {}
        store.append(LINE, 0, "events/inspect", b"{}", http_targets=[TARGET], idempotency_key="k")
        assert store.http.counters(TARGET)["pending"] == 1
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    db.close()


def test_the_example_configs_webhook_block_is_valid_uncommented(tmp_path):
    from agent.config.loader import load_config

    example = Path(__file__).resolve().parents[1] / "provisioning" / "inspection.example.yaml"
    text = example.read_text()
    assert "    # webhooks:" in text
    uncommented = "\n".join(line.replace("    # ", "    ", 1) if line.startswith("    # ") else line
                            for line in text.splitlines())
    (tmp_path / "config.yaml").write_text(uncommented)
    (hook,) = load_config(tmp_path / "config.yaml").lines["inspect"].webhooks
    assert (hook.name, hook.on, hook.max_age_h) == ("pos", ["reject", "no_read"], 24)  # an unquoted `on:` works
