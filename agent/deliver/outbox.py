"""The durable outbox: store-and-forward between the lines and the MQTT link.

A line hands every event and crop to the outbox; `publish_event` / `publish_crop` return
once the message is committed to SQLite (WAL mode, one row per message). A drain thread
feeds the link, and a row is deleted only when the broker's PUBACK for it arrives. A crash
between PUBACK and delete sends that message again: delivery is at-least-once, and
consumers de-duplicate on event_id (crops: event_id and index).

Order. Rows are numbered in production order. Each message carries the MQTT user property
`seq`: its line's sequence number, from 1, without gaps in production order and kept
across restarts, so a consumer can restore the order and see what is missing. Within a
line, the live stream goes out in order and the backlog goes out in order; when both flow
(after an outage) the live messages go first and the backlog is interleaved, at up to
drain_rate_per_s, so a long outage does not delay what happens now.

Bounds. The bytes stored (topic + properties + payload of every row) stay under
max_bytes: before a new message would pass it, the oldest crops are evicted, and only
when no crop is left, the oldest events. Rows older than max_age_s, or than the MQTT
message expiry, are expired rather than sent.

Counters, per line and kind, change in the same transaction as the rows they count, so
after any crash: produced = delivered + pending + evicted + expired + rejected
(rejected: the broker refused the message with a PUBACK reason code >= 0x80).

The file also keeps the agent's session counter (starts), for the MQTT birth and will, and
the HTTP actions' calls (agent/deliver/http_calls.py): an event and its calls are committed
in one transaction.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from . import topics
from .http_calls import HTTP_SCHEMA, HttpCalls

log = logging.getLogger(__name__)

EVENT, CROP = 0, 1  # a row's kind; crops are evicted first
KINDS = {EVENT: "events", CROP: "crops"}
OUTCOMES = ("delivered", "evicted", "expired", "rejected")
_FIELDS = ("produced", *OUTCOMES, "bytes")  # one counters row per (line, kind)
SCHEMA_VERSION = 2  # 2: the HTTP calls' tables
STATS_SCHEMA = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id      INTEGER PRIMARY KEY,                -- production order: the produced count, never reused
    line    TEXT    NOT NULL,
    seq     INTEGER NOT NULL,                   -- the line's sequence number, from 1
    kind    INTEGER NOT NULL,                   -- 0 event, 1 crop
    created REAL    NOT NULL,                   -- unix time of the commit
    size    INTEGER NOT NULL,                   -- bytes counted against max_bytes
    topic   TEXT    NOT NULL,                   -- below {prefix}/{device_id}/
    props   TEXT,                               -- MQTT user properties, JSON [[k, v], ...]
    payload BLOB    NOT NULL
);
-- The oldest crops, for eviction, without reading the events.
CREATE INDEX IF NOT EXISTS crops_oldest_first ON messages(kind) WHERE kind = 1;
CREATE TABLE IF NOT EXISTS counters (
    line      TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    produced  INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    evicted   INTEGER NOT NULL DEFAULT 0,
    expired   INTEGER NOT NULL DEFAULT 0,
    rejected  INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0,      -- bytes of this line's pending rows of this kind
    PRIMARY KEY (line, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""
_UPSERT_COUNTERS = (
    "INSERT INTO counters (line, kind, produced, delivered, evicted, expired, rejected, bytes) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (line, kind) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in _FIELDS)
)
_EVICT_BATCH = 64
_EXPIRE_BATCH = 256


class OutboxError(Exception):
    """The outbox file cannot be used: the message names the file and what to do."""


@dataclass(frozen=True)
class OutboxSettings:
    path: Path
    max_bytes: int = 2 * 1024**3
    max_age_s: float = 72 * 3600
    drain_rate_per_s: float = 200.0  # backlog messages per second; 0: as fast as the link takes them
    inflight_window: int = 64  # messages handed to the link and not yet acknowledged
    message_expiry_s: int | None = 72 * 3600  # MQTT message expiry; None: messages never expire
    stats_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_bytes < 64 * 1024:
            raise ValueError(f"outbox.max_bytes {self.max_bytes} is too small: at least 65536")
        if self.max_age_s <= 0:
            raise ValueError(f"outbox max age must be positive, not {self.max_age_s}")
        if self.drain_rate_per_s < 0:
            raise ValueError(f"outbox.drain_rate_per_s must be >= 0, not {self.drain_rate_per_s}")
        if not 1 <= self.inflight_window <= 10000:
            raise ValueError(f"outbox.inflight_window must be 1-10000, not {self.inflight_window}")
        if self.message_expiry_s is not None and self.message_expiry_s < 1:
            raise ValueError(f"outbox.message_expiry_s must be >= 1 or None, not {self.message_expiry_s}")
        if self.stats_interval_s <= 0:
            raise ValueError(f"outbox.stats_interval_s must be positive, not {self.stats_interval_s}")

    @property
    def lifetime_s(self) -> float:
        """How long a row may wait: the shorter of the age bound and the message expiry."""
        return min(self.max_age_s, self.message_expiry_s or math.inf)


class RowInfo(NamedTuple):
    line: str
    kind: int
    size: int


@dataclass(frozen=True)
class StoredMessage:
    id: int
    line: str
    seq: int
    kind: int
    created: float
    size: int
    topic: str
    props: str | None
    payload: bytes

    @property
    def info(self) -> RowInfo:
        return RowInfo(self.line, self.kind, self.size)

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.kind == CROP else "application/json"

    def user_properties(self) -> list[tuple[str, str]]:
        pairs = [tuple(p) for p in json.loads(self.props)] if self.props else []
        return [*pairs, ("seq", str(self.seq))]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class OutboxStore:
    """The SQLite file: messages, counters and the session counter. No threads of its own.

    One connection, used under a lock: safe to call from any thread. Opening the file
    counts one more session (agent start).
    """

    def __init__(self, settings: OutboxSettings, clock: Callable[[], float] = time.time):
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._path = Path(settings.path)
        self._db = self._open(self._path)
        try:
            self._counts: dict[tuple[str, int], list[int]] = {}
            for row in self._db.execute(f"SELECT line, kind, {', '.join(_FIELDS)} FROM counters"):
                self._counts[(row[0], row[1])] = list(row[2:])
            self._bytes = sum(c[-1] for c in self._counts.values())
            # Ids come from the produced count, kept in the same transactions: never reused, even
            # after the table empties, and no AUTOINCREMENT bookkeeping page to write per message.
            (max_id,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            self._last_id = max(max_id, sum(c[0] for c in self._counts.values()))
            self._next_seq: dict[str, int] = {}
            for (line, _kind), c in self._counts.items():
                self._next_seq[line] = self._next_seq.get(line, 1) + c[0]
            (self.session,) = self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('session', 1) "
                "ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value"
            ).fetchone()
            self.http = HttpCalls(self._db, self._lock, clock)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._unusable(exc) from None
        self._evicting: str | None = None  # what the last eviction took, to log each streak once

    # -- opening ------------------------------------------------------------------

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the outbox folder {path.parent}: {exc.strerror or exc}; "
                "set outbox.path to a writable location"
            ) from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}; set outbox.path to a writable file") from None
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"the outbox {path} cannot use WAL mode (got {mode}): put it on a local filesystem")
            # NORMAL: a commit survives a crash of the agent; only a power cut can take the last
            # few. FULL would fsync every message.
            db.execute("PRAGMA synchronous = NORMAL")
            # A checkpoint is where WAL mode fsyncs: one per ~40 MB of WAL rather than per 4 MB.
            db.execute("PRAGMA wal_autocheckpoint = 10000")
            db.execute("PRAGMA journal_size_limit = 67108864")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"the outbox {path} was written by a newer edge-agent (schema {version}, this one "
                    f"reads {SCHEMA_VERSION}): upgrade the agent, or move the file aside"
                )
            db.executescript(f"BEGIN; {_SCHEMA} {HTTP_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except OutboxError:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._unusable(exc) from None
        return db

    def _unusable(self, exc: Exception) -> OutboxError:
        return OutboxError(
            f"the outbox {self._path} is not usable ({exc}): check the disk and permissions; if the file "
            "is damaged, move it aside (its undelivered messages stay in it) and the agent starts a new one"
        )

    # -- writing -------------------------------------------------------------------

    def append(self, line: str, kind: int, topic: str, payload: bytes, props: str | None = None, *,
               http_targets: Sequence[str] = (), idempotency_key: str = "") -> int | None:
        """Commit one message. Returns its row id, or None if it alone is over max_bytes (counted as evicted).

        http_targets: HTTP actions that POST the payload too, committed in the same transaction.
        """
        size = len(payload) + len(topic) + (len(props) if props else 0)
        now = self._clock()
        with self._lock:
            row_id = self._last_id + 1
            seq = self._next_seq.get(line, 1)
            self._begin()
            try:
                if size > self._settings.max_bytes:
                    deltas = {(line, kind): [1, 0, 1, 0, 0, 0]}  # produced, and evicted at once
                    log.warning("outbox: a %d-byte message for line %s is over outbox.max_bytes; dropped",
                                size, line)
                else:
                    deltas = {(line, kind): [1, 0, 0, 0, 0, size]}
                    if self._bytes + size > self._settings.max_bytes:
                        self._evict(self._bytes + size - self._settings.max_bytes, deltas)
                    self._db.execute(
                        "INSERT INTO messages (id, line, seq, kind, created, size, topic, props, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (row_id, line, seq, kind, now, size, topic, props, payload),
                    )
                http_deltas = self.http.insert_locked(http_targets, idempotency_key, payload, now) if http_targets else None
                self._commit(deltas, http_deltas)
            except BaseException:
                self._rollback()
                raise
            self._last_id = row_id
            self._next_seq[line] = seq + 1
            return row_id if size <= self._settings.max_bytes else None

    def settle(self, outcomes: Sequence[tuple[int, str]], known: Mapping[int, RowInfo] | None = None) -> int:
        """Delete rows with their outcome ('delivered', 'rejected' or 'expired'); one transaction.

        A row already gone (evicted or expired meanwhile) is not counted twice. `known` gives
        the line, kind and size of rows the caller read (faster). Returns rows deleted.
        """
        if not outcomes:
            return 0
        with self._lock:
            if known is not None and all(row_id in known for row_id, _ in outcomes):
                self._begin()
                try:
                    cursor = self._db.executemany("DELETE FROM messages WHERE id = ?", [(r,) for r, _ in outcomes])
                    if cursor.rowcount == len(outcomes):
                        deltas: dict[tuple[str, int], list[int]] = {}
                        for row_id, outcome in outcomes:
                            info = known[row_id]
                            self._delta(deltas, info.line, info.kind, **{outcome: 1, "bytes": -info.size})
                        self._commit(deltas)
                        return len(outcomes)
                    self._rollback()  # some row went meanwhile: find out which, one by one
                except BaseException:
                    self._rollback()
                    raise
            return self._settle_each(outcomes)

    def _settle_each(self, outcomes: Sequence[tuple[int, str]]) -> int:
        # Caller holds the lock.
        deleted = 0
        deltas: dict[tuple[str, int], list[int]] = {}
        self._begin()
        try:
            for row_id, outcome in outcomes:
                row = self._db.execute("DELETE FROM messages WHERE id = ? RETURNING line, kind, size",
                                       (row_id,)).fetchone()
                if row is not None:
                    self._delta(deltas, row[0], row[1], **{outcome: 1, "bytes": -row[2]})
                    deleted += 1
            self._commit(deltas)
        except BaseException:
            self._rollback()
            raise
        return deleted

    def expire(self) -> int:
        """Expire rows that waited longer than the lifetime, oldest first. Returns how many."""
        cutoff = self._clock() - self._settings.lifetime_s
        total = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, created FROM messages ORDER BY id LIMIT ?", (_EXPIRE_BATCH,)
                ).fetchall()
            old = []
            for row_id, created in rows:
                if created >= cutoff:  # rows are created in id order: the first young one ends the sweep
                    break
                old.append((row_id, "expired"))
            if not old:
                break
            total += self.settle(old)
            if len(old) < _EXPIRE_BATCH:
                break
        if total:
            log.warning("outbox: %d messages older than %.0f s expired undelivered", total, self._settings.lifetime_s)
        return total

    def _evict(self, excess: int, deltas: dict) -> None:
        # Caller holds the lock, inside a transaction. Crops first, then events; oldest first.
        freed = 0
        for what, query in (
            ("crops", "SELECT id, line, kind, size FROM messages WHERE kind = 1 ORDER BY id LIMIT ?"),
            ("events", "SELECT id, line, kind, size FROM messages ORDER BY id LIMIT ?"),
        ):
            while freed < excess:
                rows = self._db.execute(query, (_EVICT_BATCH,)).fetchall()
                if not rows:
                    break
                for row_id, line, kind, size in rows:
                    self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    self._delta(deltas, line, kind, evicted=1, bytes=-size)
                    freed += size
                    if freed >= excess:
                        break
            if self._evicting != what and freed:
                self._evicting = what
                log.warning("outbox full (%d bytes, outbox.max_bytes): evicting the oldest %s",
                            self._settings.max_bytes, what)
            if freed >= excess:
                return

    def _delta(self, deltas: dict, line: str, kind: int, **changes: int) -> None:
        d = deltas.setdefault((line, kind), [0] * len(_FIELDS))
        for name, value in changes.items():
            d[_FIELDS.index(name)] += value

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self, deltas: dict, http_deltas: dict | None = None) -> None:
        for (line, kind), d in deltas.items():
            self._db.execute(_UPSERT_COUNTERS, (line, kind, *d))
        if http_deltas:
            self.http.write_counters_locked(http_deltas)
        self._db.execute("COMMIT")
        if http_deltas:
            self.http.applied(http_deltas)
        # Only now, when they are on disk, do the counts in memory change.
        for key, d in deltas.items():
            counts = self._counts.setdefault(key, [0] * len(_FIELDS))
            for i, value in enumerate(d):
                counts[i] += value
            self._bytes += d[-1]

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # -- reading -------------------------------------------------------------------

    def fetch(self, after: int, limit: int, upto: int | None = None) -> list[StoredMessage]:
        """Rows with after < id (<= upto), oldest first."""
        sql = "SELECT id, line, seq, kind, created, size, topic, props, payload FROM messages WHERE id > ?"
        args: tuple = (after,)
        if upto is not None:
            sql += " AND id <= ?"
            args += (upto,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [StoredMessage(*row) for row in rows]

    def last_id(self) -> int:
        """The id of the last message committed (0: none yet)."""
        with self._lock:
            return self._last_id

    def oldest_created(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def counters(self) -> dict:
        """Totals and per kind: produced, delivered, pending, evicted, expired, rejected, bytes."""
        with self._lock:
            counts = {key: list(c) for key, c in self._counts.items()}
        per_kind = {}
        for kind, name in KINDS.items():
            sums = [sum(c[i] for (_, k), c in counts.items() if k == kind) for i in range(len(_FIELDS))]
            per_kind[name] = self._summary(sums)
        totals = self._summary([sum(c[i] for c in counts.values()) for i in range(len(_FIELDS))])
        lines = sorted({line for line, _ in counts})
        return {**totals, **per_kind, "lines": lines}

    @staticmethod
    def _summary(sums: list[int]) -> dict:
        named = dict(zip(_FIELDS, sums))
        named["pending"] = named["produced"] - sum(named[o] for o in OUTCOMES)
        return {k: named[k] for k in ("produced", "delivered", "pending", *OUTCOMES[1:], "bytes")}

    def integrity_check(self) -> str:
        with self._lock:
            return "; ".join(row[0] for row in self._db.execute("PRAGMA integrity_check"))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def settings(self) -> OutboxSettings:
        return self._settings

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]


class Link(Protocol):
    """What the outbox needs from the MQTT link (agent.deliver.mqtt.MqttPublisher)."""

    @property
    def connected(self) -> bool: ...

    @property
    def connections(self) -> int: ...

    def send(self, subtopic: str, payload: bytes, content_type: str, *, on_ack: Callable[[bool], None],
             user_properties: Sequence[tuple[str, str]] = (), expiry_s: int | None = None) -> bool: ...

    def publish_stats(self, body: dict, expiry_s: int | None = None) -> None: ...

    def stats(self) -> dict: ...


class Outbox:
    """The lines' publisher: commits each message, then a drain thread feeds the link.

    Same two methods as the MQTT publisher (publish_event, publish_crop), so a line does
    not know which one it has. start() starts the drain thread; close() stops it after
    waiting a bounded time for the acknowledgements still outstanding.
    """

    def __init__(self, store: OutboxStore, link: Link, clock: Callable[[], float] = time.time):
        self._store = store
        self._link = link
        self._settings = store.settings
        self._clock = clock
        self._cond = threading.Condition()
        self._acks: list[tuple[int, bool]] = []  # from the network thread; guarded by _cond
        self._wanted = False  # a new row, or close(): the drain thread should look now
        self._closed = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None
        self._write_errors = 0
        self._refused = 0  # offered after close()
        self._last_write_error: str | None = None
        # Drain thread only:
        self._handed: dict[int, RowInfo] = {}  # rows given to the link, not yet settled
        self._connection_seen = 0
        self._live_after = 0  # rows above the watermark are live; this one was handed last
        self._watermark = 0  # the last row that existed when the link came up
        self._backlog_after: int | None = None  # None: no backlog left to send
        self._backlog_started = 0.0
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._ack_batch = max(1, self._settings.inflight_window // 4)

    # -- the lines' side -----------------------------------------------------------

    def publish_event(self, line: str, event: dict, http_targets: Sequence[str] = ()) -> None:
        """http_targets: HTTP actions that POST the event too (their calls commit with it)."""
        self._append(line, EVENT, topics.event(line), _json_bytes(event), None, http_targets,
                     str(event.get("event_id", "")))

    def publish_message(self, stream: str, subtopic: str, body: dict) -> None:
        """Durable JSON on another subtopic than a line's events (e.g. sync/events). `stream` takes
        the place of the line for `seq` and the counters; give it a name no line can have (`@sync`)."""
        self._append(stream, EVENT, subtopic, _json_bytes(body), None)

    def publish_crop(self, line: str, event_id: str, index: int, jpeg: bytes, meta: dict) -> None:
        props = json.dumps([[str(k), str(v)] for k, v in meta.items()], separators=(",", ":"), ensure_ascii=False)
        self._append(line, CROP, topics.crop(line, event_id, index), bytes(jpeg), props)

    def _append(self, line: str, kind: int, topic: str, payload: bytes, props: str | None,
                http_targets: Sequence[str] = (), idempotency_key: str = "") -> None:
        if self._closed:
            with self._cond:
                self._refused += 1
            log.warning("outbox closed: a message for %s was not stored", topic)
            return
        try:
            self._store.append(line, kind, topic, payload, props, http_targets=http_targets,
                               idempotency_key=idempotency_key)
        except sqlite3.Error as exc:  # disk full, I/O error: the line must keep inspecting
            with self._cond:
                self._write_errors += 1
                first = self._last_write_error != str(exc)
                self._last_write_error = str(exc)
            if first:
                log.error("outbox %s: cannot store a message for %s: %s", self._store.path, topic, exc)
            return
        with self._cond:
            self._wanted = True
            self._cond.notify()

    # -- lifetime ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._store.expire()
        self._thread = threading.Thread(target=self._drain_loop, name="outbox-drain", daemon=True)
        self._thread.start()
        c = self._store.counters()
        log.info("outbox %s: %d messages (%d bytes) waiting from before; session %d",
                 self._store.path, c["pending"], c["bytes"], self._store.session)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop taking messages, wait up to timeout_s for outstanding acks, stop the drain. Idempotent.

        Rows not acknowledged by then stay in the file and are sent after the next start.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._close_deadline = time.monotonic() + max(0.0, timeout_s)
            self._wanted = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s + 2.0)
            if self._thread.is_alive():
                log.error("outbox drain thread did not stop within %.1f s", timeout_s + 2.0)
        if self._link.connected:
            self._link.publish_stats(self._stats_body())

    # -- the drain thread ------------------------------------------------------------

    def _on_ack(self, row_id: int, accepted: bool) -> None:
        # Network thread, paho's lock held: record and go.
        with self._cond:
            self._acks.append((row_id, accepted))
            if len(self._acks) >= self._ack_batch:
                self._cond.notify()

    def _drain_loop(self) -> None:
        next_sweep = time.monotonic() + 1.0
        next_stats = time.monotonic() + self._settings.stats_interval_s
        while True:
            with self._cond:
                if not (self._wanted or self._acks):
                    self._cond.wait(self._wait_s())
                acks, self._acks = self._acks, []
                self._wanted = False
                closed = self._closed
            try:
                if acks:
                    self._settle([(row_id, "delivered" if ok else "rejected") for row_id, ok in acks])
                now = time.monotonic()
                if closed:
                    # Flush: keep sending until everything is acknowledged, the link is down,
                    # or close()'s time is up. What is left goes out after the next start.
                    if not self._link.connected or now >= self._close_deadline:
                        return
                    if self._feed(now) and not self._handed:
                        return
                    continue
                if now >= next_sweep:
                    self._store.expire()
                    next_sweep = now + 1.0
                if self._link.connected:
                    self._feed(now)
                    if now >= next_stats:
                        self._link.publish_stats(self._stats_body())
                        next_stats = now + self._settings.stats_interval_s
            except sqlite3.Error:
                # The file went bad under us (disk error): keep trying, slowly, and say so.
                log.exception("outbox %s: drain failed; retrying", self._store.path)
                time.sleep(1.0)
            except Exception:
                log.exception("outbox drain failed; retrying")
                time.sleep(1.0)

    def _wait_s(self) -> float:
        if self._closed:
            return 0.02
        if self._handed:
            return 0.02  # acks below the batch size are settled this often
        rate = self._settings.drain_rate_per_s
        if self._backlog_after is not None and rate > 0 and self._tokens < 1:
            return min(0.1, max(0.005, (1 - self._tokens) / rate))
        return 0.1

    def _settle(self, outcomes: list[tuple[int, str]]) -> None:
        self._store.settle(outcomes, known=self._handed)
        for row_id, _ in outcomes:
            self._handed.pop(row_id, None)

    def _feed(self, now: float) -> bool:
        """Hand the link what the window and the backlog rate allow. True: nothing is left to hand."""
        connection = self._link.connections
        if connection != self._connection_seen:
            self._link_came_up(connection, now)
        room = self._settings.inflight_window - len(self._handed)
        if room <= 0:
            return False
        # Live first: whatever was committed since the link came up.
        rows = self._store.fetch(self._live_after, room)
        sent, self._live_after = self._send(rows, self._live_after, room)
        live_done = len(rows) < room and (not rows or self._live_after == rows[-1].id)
        room -= sent
        if room <= 0 or self._backlog_after is None:
            return live_done and self._backlog_after is None
        allowed = room
        rate = self._settings.drain_rate_per_s
        if rate > 0:
            self._tokens = min(max(1.0, rate / 10), self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            allowed = min(room, int(self._tokens))
            if allowed <= 0:
                return False
        # Rows handed before a reconnect are still with the link, which sends them again itself.
        rows = self._store.fetch(self._backlog_after, allowed + len(self._handed), upto=self._watermark)
        if not rows:
            log.info("outbox: backlog drained in %.1f s", now - self._backlog_started)
            self._backlog_after = None
            return live_done
        sent, self._backlog_after = self._send(rows, self._backlog_after, allowed)
        if rate > 0:
            self._tokens -= sent
        return False

    def _link_came_up(self, connection: int, now: float) -> None:
        self._connection_seen = connection
        self._watermark = self._store.last_id()
        self._live_after = self._watermark
        self._backlog_after = 0
        self._backlog_started = now
        self._tokens, self._tokens_at = 0.0, now
        waiting = self._store.counters()["pending"] - len(self._handed)
        if waiting > 0:
            rate = self._settings.drain_rate_per_s
            log.info("outbox: link up; draining a backlog of %d messages at %s", waiting,
                     f"up to {rate:g}/s" if rate else "full speed")

    def _send(self, rows: list[StoredMessage], cursor: int, limit: int) -> tuple[int, int]:
        """Hand up to `limit` rows to the link, in order. Returns (handed, new cursor)."""
        sent = 0
        expired: list[tuple[int, str]] = []
        wall = self._clock()
        expiry = self._settings.message_expiry_s
        for row in rows:
            if sent >= limit:
                break
            if row.id in self._handed:
                cursor = row.id
                continue
            age = max(0.0, wall - row.created)
            if age >= self._settings.lifetime_s:
                expired.append((row.id, "expired"))
                cursor = row.id
                continue
            self._handed[row.id] = row.info
            ok = self._link.send(
                row.topic, row.payload, row.content_type,
                on_ack=functools.partial(self._on_ack, row.id),
                user_properties=row.user_properties(),
                expiry_s=None if expiry is None else max(1, math.ceil(expiry - age)),
            )
            if not ok:  # the link cannot take more now: this row and the rest wait
                del self._handed[row.id]
                break
            sent += 1
            cursor = row.id
        if expired:
            self._store.settle(expired, known={row.id: row.info for row in rows})
        return sent, cursor

    # -- state -----------------------------------------------------------------------

    def stats(self) -> dict:
        counters = self._store.counters()
        counters.pop("lines")
        oldest = self._store.oldest_created()
        with self._cond:
            write_errors, refused = self._write_errors, self._refused
        return {
            **counters,
            "max_bytes": self._settings.max_bytes,
            "oldest_age_s": None if oldest is None else round(max(0.0, self._clock() - oldest), 1),
            "inflight": len(self._handed),
            "draining_backlog": self._backlog_after is not None and self._link.connected,
            "write_errors": write_errors,
            "refused": refused,
            "http": self._store.http.counters(),
        }

    def _stats_body(self) -> dict:
        return {"ts": round(time.time(), 3), "outbox": self.stats(), "mqtt": self._link.stats()}

    @property
    def store(self) -> OutboxStore:
        return self._store

    def __repr__(self) -> str:
        return f"Outbox({self._store.path})"
