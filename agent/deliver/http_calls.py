"""HTTP calls waiting in the outbox file, beside the MQTT messages.

An HTTP action (agent/act/http.py) POSTs inspection events to a POS or webhook. Each call
it owes is a row here, in the outbox's own SQLite file, through the outbox's connection:
a call is committed in the same transaction as the MQTT event it belongs to, so a crash
keeps both or neither. A row is deleted when the receiver answers 2xx (delivered), when
it refuses the call with an answer that repeating cannot change (refused), when it is
older than its target's max age (expired), or when the target's bounds need room for a
newer call (evicted, the oldest first). A call the sender already has on the wire when it
is evicted may still reach the receiver; it stays counted as evicted.

Counters, per target, change in the same transaction as the rows they count, so after
any crash: produced = delivered + pending + refused + expired + evicted.

This module owns the rows and their counters, not the network: the sender is the action.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

HTTP_OUTCOMES = ("delivered", "refused", "expired", "evicted")
_FIELDS = ("produced", *HTTP_OUTCOMES, "bytes")
_PRODUCED, _BYTES = 0, len(_FIELDS) - 1

# Created by the outbox with its own tables (the outbox file's schema version 2).
HTTP_SCHEMA = """
CREATE TABLE IF NOT EXISTS http_calls (
    id         INTEGER PRIMARY KEY,
    target     TEXT    NOT NULL,                -- the action: LINE/NAME
    event_id   TEXT    NOT NULL,                -- the Idempotency-Key of every attempt
    created    REAL    NOT NULL,                -- unix time of the commit
    due        REAL    NOT NULL,                -- unix time of the next attempt
    attempts   INTEGER NOT NULL DEFAULT 0,      -- failed attempts so far
    size       INTEGER NOT NULL,                -- bytes counted against the target's max_bytes
    payload    BLOB    NOT NULL,                -- the request body (the event JSON)
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS http_calls_next ON http_calls(target, due);
CREATE INDEX IF NOT EXISTS http_calls_oldest ON http_calls(target);
CREATE TABLE IF NOT EXISTS http_counters (
    target    TEXT    PRIMARY KEY,
    produced  INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    refused   INTEGER NOT NULL DEFAULT 0,
    expired   INTEGER NOT NULL DEFAULT 0,
    evicted   INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0        -- bytes of the target's pending calls
) WITHOUT ROWID;
"""
_UPSERT = (
    f"INSERT INTO http_counters (target, {', '.join(_FIELDS)}) VALUES (?, {', '.join('?' * len(_FIELDS))}) "
    "ON CONFLICT (target) DO UPDATE SET " + ", ".join(f"{f} = {f} + excluded.{f}" for f in _FIELDS)
)
_BATCH = 256


@dataclass(frozen=True)
class HttpBounds:
    """What one target may keep waiting; a new call past either bound evicts the oldest."""

    max_pending: int = 10_000
    max_bytes: int = 64 * 1024**2

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_bytes < 1:
            raise ValueError(f"HTTP call bounds must be positive: {self}")


@dataclass(frozen=True)
class HttpCall:
    id: int
    target: str
    event_id: str
    created: float
    attempts: int
    payload: bytes


Deltas = dict[str, list[int]]


class HttpCalls:
    """The http_calls table of an open outbox file. Thread-safe: every call takes the outbox's lock.

    Built by OutboxStore, which hands over its connection, its lock and its clock.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, clock: Callable[[], float]):
        self._db = db
        self._lock = lock
        self._clock = clock
        self._counts: Deltas = {}
        for target, *values in db.execute(f"SELECT target, {', '.join(_FIELDS)} FROM http_counters"):
            self._counts[target] = list(values)
        self._bounds: dict[str, HttpBounds] = {}
        self._evicting: set[str] = set()  # targets in an eviction streak (logged once per streak)

    def set_bounds(self, target: str, bounds: HttpBounds) -> None:
        with self._lock:
            self._bounds[target] = bounds

    # -- inside the outbox's transaction ------------------------------------------------------

    def insert_locked(self, targets: Iterable[str], event_id: str, payload: bytes, now: float) -> Deltas:
        """Add one call per target. The caller holds the lock, inside a transaction, and passes
        the returned deltas to write_counters_locked before, and applied() after, its COMMIT."""
        deltas: Deltas = {}
        size = len(payload)
        for target in targets:
            bounds = self._bounds.get(target, HttpBounds())
            d = self._delta(deltas, target, produced=1)
            if size > bounds.max_bytes:
                self._delta(deltas, target, evicted=1)
                log.warning("HTTP calls for %s: a %d-byte call is over max_bytes (%d); dropped (evicted)",
                            target, size, bounds.max_bytes)
                continue
            current = self._counts.get(target, [0] * len(_FIELDS))
            pending = _pending(current) + _pending(d) - 1  # before this call
            pending_bytes = current[_BYTES] + d[_BYTES]
            excess_rows = pending + 1 - bounds.max_pending
            excess_bytes = pending_bytes + size - bounds.max_bytes
            if excess_rows > 0 or excess_bytes > 0:
                self._evict_locked(target, excess_rows, excess_bytes, deltas, bounds)
            elif target in self._evicting:
                self._evicting.discard(target)
            self._db.execute(
                "INSERT INTO http_calls (target, event_id, created, due, size, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (target, event_id, now, now, size, payload),
            )
            d[_BYTES] += size
        return deltas

    def _evict_locked(self, target: str, rows: int, size: int, deltas: Deltas, bounds: HttpBounds) -> None:
        while rows > 0 or size > 0:
            oldest = self._db.execute("SELECT id, size FROM http_calls WHERE target = ? ORDER BY id LIMIT ?",
                                      (target, 64)).fetchall()
            if not oldest:
                return
            for call_id, call_size in oldest:
                self._db.execute("DELETE FROM http_calls WHERE id = ?", (call_id,))
                self._delta(deltas, target, evicted=1, bytes=-call_size)
                rows, size = rows - 1, size - call_size
                if rows <= 0 and size <= 0:
                    break
        if target not in self._evicting:
            self._evicting.add(target)
            log.warning("HTTP calls for %s: full (max_pending %d, max_bytes %d); evicting the oldest calls",
                        target, bounds.max_pending, bounds.max_bytes)

    def write_counters_locked(self, deltas: Deltas) -> None:
        for target, d in deltas.items():
            self._db.execute(_UPSERT, (target, *d))

    def applied(self, deltas: Deltas) -> None:
        """After the COMMIT: only now, with the rows on disk, do the counts in memory change."""
        for target, d in deltas.items():
            counts = self._counts.setdefault(target, [0] * len(_FIELDS))
            for i, value in enumerate(d):
                counts[i] += value

    # -- the action's side -----------------------------------------------------------------------

    def due(self, target: str, now: float, limit: int) -> list[HttpCall]:
        """Calls whose next attempt is due, soonest first (a call that failed waits behind the others)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, target, event_id, created, attempts, payload FROM http_calls "
                "WHERE target = ? AND due <= ? ORDER BY due, id LIMIT ?", (target, now, limit)).fetchall()
        return [HttpCall(*row) for row in rows]

    def next_due(self, target: str) -> float | None:
        with self._lock:
            (due,) = self._db.execute("SELECT MIN(due) FROM http_calls WHERE target = ?", (target,)).fetchone()
        return due

    def settle(self, call_id: int, outcome: str) -> bool:
        """Delete one call as 'delivered' or 'refused'. False: it was gone already (evicted or expired)."""
        if outcome not in ("delivered", "refused"):
            raise ValueError(f"not an outcome of an answer: {outcome!r}")
        with self._transaction() as deltas:
            row = self._db.execute("DELETE FROM http_calls WHERE id = ? RETURNING target, size", (call_id,)).fetchone()
            if row is not None:
                self._delta(deltas, row[0], **{outcome: 1, "bytes": -row[1]})
        return row is not None

    def retry_later(self, call_id: int, due: float, error: str) -> None:
        """One more failed attempt: the call waits until `due` (unix time)."""
        with self._lock:
            self._db.execute("UPDATE http_calls SET attempts = attempts + 1, due = ?, last_error = ? WHERE id = ?",
                             (due, error[:500], call_id))

    def expire(self, target: str, max_age_s: float) -> int:
        """Delete the target's calls older than max_age_s, oldest first. Returns how many."""
        cutoff = self._clock() - max_age_s
        total = 0
        while True:
            with self._transaction() as deltas:
                rows = self._db.execute(
                    "DELETE FROM http_calls WHERE id IN (SELECT id FROM http_calls WHERE target = ? AND created < ? "
                    "ORDER BY id LIMIT ?) RETURNING size", (target, cutoff, _BATCH)).fetchall()
                for (size,) in rows:
                    self._delta(deltas, target, expired=1, bytes=-size)
            total += len(rows)
            if len(rows) < _BATCH:
                break
        if total:
            log.warning("HTTP calls for %s: %d calls older than %.0f s expired undelivered", target, total, max_age_s)
        return total

    # -- state ---------------------------------------------------------------------------------------

    def counters(self, target: str | None = None) -> dict:
        """Per target (or for one): produced, delivered, pending, refused, expired, evicted, bytes."""
        with self._lock:
            counts = {t: list(c) for t, c in self._counts.items() if target is None or t == target}
        summaries = {t: _summary(c) for t, c in sorted(counts.items())}
        if target is not None:
            return summaries.get(target, _summary([0] * len(_FIELDS)))
        return summaries

    def oldest_created(self, target: str) -> float | None:
        with self._lock:
            (created,) = self._db.execute("SELECT MIN(created) FROM http_calls WHERE target = ?", (target,)).fetchone()
        return created

    # -- helpers -------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            deltas: Deltas = {}
            try:
                yield deltas
                self.write_counters_locked(deltas)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self.applied(deltas)

    @staticmethod
    def _delta(deltas: Deltas, target: str, **changes: int) -> list[int]:
        d = deltas.setdefault(target, [0] * len(_FIELDS))
        for name, value in changes.items():
            d[_FIELDS.index(name)] += value
        return d


def _pending(c: list[int]) -> int:
    return c[_PRODUCED] - sum(c[1:_BYTES])


def _summary(c: list[int]) -> dict:
    named = dict(zip(_FIELDS, c))
    return {"produced": named["produced"], "delivered": named["delivered"], "pending": _pending(c),
            **{k: named[k] for k in HTTP_OUTCOMES[1:]}, "bytes": named["bytes"]}
