"""HTTP actions: POST inspection events to a local POS or webhook, durably.

This is the only agent module that imports requests.

The line never waits for HTTP. Its event and the calls it owes are committed together in
the outbox file (agent/deliver/http_calls.py), and that local commit is all the line does;
each action has its own thread that POSTs what is waiting. A call leaves the file only when
the receiver answers it (2xx: delivered; a status a repeat cannot change: refused), when it
is older than max_age_s (expired), or when a newer call needs its room (evicted). A call
pending at a restart, a crash or a power cut is sent after the next start.

Every attempt carries `Idempotency-Key: <event_id>`: a receiver sees a lost answer's retry,
or a call repeated after a crash, only as the same key again.

Failures (connection errors, timeouts, 408, 425, 429, 5xx) are retried with exponential
backoff and jitter, and a Retry-After header is honoured. The backoff is per call (a call
the receiver keeps failing waits behind the others) and per target (after a failure, the
next attempt of any call waits too, so a POS that is down is probed, not flooded). Other
answers, 4xx and redirects, are refused and counted, and never retried.

`timeout_s` bounds the connect and each read, not a receiver that trickles bytes forever:
such a receiver holds up its own calls only.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import requests

from ..deliver.http_calls import HttpBounds, HttpCall, HttpCalls
from ..ingest.sources import Backoff

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
_BATCH = 16  # calls read from the file at a time
_SWEEP_S = 1.0  # expiry sweep interval


@dataclass(frozen=True)
class HttpActionSettings:
    url: str
    on: frozenset[str] = frozenset({"reject", "no_read", "pass"})  # event results that are sent
    timeout_s: float = 2.0
    backoff_s: float = 0.5
    backoff_max_s: float = 60.0
    max_age_s: float = 24 * 3600.0
    max_pending: int = 10_000
    max_bytes: int = 64 * 1024**2
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        if self.timeout_s <= 0 or self.backoff_s <= 0 or self.backoff_max_s < self.backoff_s or self.max_age_s <= 0:
            raise ValueError(f"timeout, backoff (<= backoff max) and max age must be positive: {self}")


class HttpActionError(Exception):
    """A webhook that cannot be set up (its header credential unreadable): a user error at start."""


class Answer(NamedTuple):
    outcome: str  # "delivered", "refused" or "retry"
    status: int | None  # None: no HTTP answer at all
    error: str | None
    retry_after_s: float | None


class _Detached(Exception):
    """The action was closed: its thread must not touch the outbox file again."""


class HttpAction:
    """One webhook: POSTs the calls waiting in the outbox file for `target` (LINE/NAME)."""

    def __init__(self, target: str, settings: HttpActionSettings, calls: HttpCalls, *,
                 session: requests.Session | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time):
        self.target = target
        self.settings = settings
        self._calls = calls
        calls.set_bounds(target, HttpBounds(settings.max_pending, settings.max_bytes))
        self._session = session or requests.Session()
        self._rng = rng or random.Random()
        self._clock = clock
        self._backoff = Backoff(settings.backoff_s, settings.backoff_max_s)
        self._cv = threading.Condition()
        self._wanted = False  # a new call was committed: look now
        self._closing = False
        self._close_deadline = math.inf
        self._store_lock = threading.Lock()  # the thread's store calls against close()
        self._detached = False
        self._thread: threading.Thread | None = None
        # The thread's own state (read by stats() without a lock: single values).
        self._failures = 0  # consecutive failed attempts, any call
        self._blocked_until = 0.0  # monotonic: no attempt before this
        self._last_refusal: int | None = None  # the status of the last call refused, while they keep coming
        self.attempts = 0  # this run
        self.retries = 0  # this run: attempts that failed and will be repeated
        self.last_status: int | None = None
        self.last_error: str | None = None

    def wants(self, event: dict) -> bool:
        return event.get("result") in self.settings.on

    def notify(self) -> None:
        """A call for this action was committed (never blocks)."""
        with self._cv:
            self._wanted = True
            self._cv.notify()

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        waiting = self._calls.counters(self.target)["pending"]
        if waiting:
            log.info("HTTP action %s: %d calls waiting from before; sending them to %s", self.target, waiting,
                     self.settings.url)
        self._thread = threading.Thread(target=self._run, name=f"http-{self.target}", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop. Calls due go out for up to timeout_s while the receiver answers (the line has
        stopped by then: its last events); whatever is not answered by then stays in the outbox
        file and is sent, with the same key, after the next start."""
        with self._cv:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s + 0.1)
            alive = self._thread.is_alive()
        else:
            alive = False
        with self._store_lock:  # waits for a store call in progress, then shuts the thread out
            self._detached = True
        if alive:
            log.info("HTTP action %s: a call to %s is still in flight at stop; it is repeated after the next start",
                     self.target, self.settings.url)
        else:
            self._session.close()

    # -- the sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = 0.0
        while time.monotonic() < self._close_deadline:
            try:
                if time.monotonic() >= next_sweep:
                    self._store(self._calls.expire, self.target, self.settings.max_age_s)
                    next_sweep = time.monotonic() + _SWEEP_S
                wait_s = self._blocked_until - time.monotonic()
                if wait_s <= 0:
                    batch = self._store(self._calls.due, self.target, self._clock(), _BATCH)
                    if batch:
                        for call in batch:
                            if time.monotonic() >= self._close_deadline or not self._attempt(call):
                                break
                        continue
                    next_due = self._store(self._calls.next_due, self.target)
                    wait_s = _SWEEP_S if next_due is None else next_due - self._clock()
                if self._closing:
                    return  # nothing due, or the receiver is failing: the rest waits for the next start
                self._sleep(min(max(wait_s, 0.001), _SWEEP_S))
            except _Detached:
                return
            except sqlite3.Error:
                log.exception("HTTP action %s: the outbox file failed; retrying", self.target)
                self._sleep(1.0)
            except Exception:
                log.exception("HTTP action %s failed; retrying", self.target)
                self._sleep(1.0)

    def _sleep(self, seconds: float) -> None:
        with self._cv:
            if not (self._wanted or self._closing):
                self._cv.wait(seconds)
            self._wanted = False

    def _store(self, method, *args):
        with self._store_lock:
            if self._detached:
                raise _Detached
            return method(*args)

    def _attempt(self, call: HttpCall) -> bool:
        """POST one call and record the answer. False: the target is backing off."""
        answer = self.post(call)
        self.attempts += 1
        self.last_status = answer.status
        if answer.outcome != "retry":
            self._store(self._calls.settle, call.id, answer.outcome)
            if self._failures:
                log.info("HTTP action %s: %s answers again (%d failed attempts before)", self.target,
                         self.settings.url, self._failures)
            self._failures = 0
            if answer.outcome == "refused":
                if answer.status != self._last_refusal:  # once per streak of one status, not per event
                    log.warning("HTTP action %s: event %s refused, not retried: %s", self.target, call.event_id,
                                answer.error)
                self._last_refusal = answer.status
                self.last_error = answer.error
            else:
                self._last_refusal = None
            return True
        changed = self._failures == 0 or answer.error != self.last_error
        self.last_error = answer.error
        self._failures += 1
        wait_call = max(self._backoff.delay(call.attempts, self._rng), answer.retry_after_s or 0.0)
        wait_target = max(self._backoff.delay(self._failures - 1, self._rng), answer.retry_after_s or 0.0)
        self._store(self._calls.retry_later, call.id, self._clock() + wait_call, answer.error or "")
        self._blocked_until = time.monotonic() + wait_target
        if changed:
            log.warning("HTTP action %s: %s; calls waiting in the outbox: %d; next attempt in %.2f s", self.target,
                        answer.error, self._calls.counters(self.target)["pending"], wait_target)
        self.retries += 1  # last: whoever sees the retry counted also sees its error
        return False

    def post(self, call: HttpCall) -> Answer:
        """One attempt, classified. Never raises for what the network or the receiver does."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": call.event_id, **dict(self.settings.headers)}
        try:
            response = self._session.post(self.settings.url, data=call.payload, headers=headers,
                                          timeout=self.settings.timeout_s, allow_redirects=False)
        except requests.Timeout:
            return Answer("retry", None, f"no answer from {self.settings.url} within {self.settings.timeout_s:g} s", None)
        except requests.RequestException as exc:
            return Answer("retry", None, f"cannot reach {self.settings.url}: {request_error(exc)}", None)
        status = response.status_code
        if 200 <= status < 300:
            return Answer("delivered", status, None, None)
        if status in _RETRY_STATUSES:
            retry_after = retry_after_s(response.headers.get("Retry-After"), self._clock())
            return Answer("retry", status, f"HTTP {status} from {self.settings.url}", retry_after)
        if 300 <= status < 400:
            where = response.headers.get("Location", "?")
            return Answer("refused", status, f"HTTP {status} redirect from {self.settings.url} to {where}: "
                                             "set the webhook url to the final address", None)
        return Answer("refused", status, f"HTTP {status} from {self.settings.url}: {response.text[:200]!r}", None)

    # -- state ---------------------------------------------------------------------------------------

    def stats(self) -> dict:
        counters = self._calls.counters(self.target)
        oldest = self._calls.oldest_created(self.target)
        return {
            "url": self.settings.url,
            **counters,
            "oldest_age_s": None if oldest is None else round(max(0.0, self._clock() - oldest), 1),
            "attempts": self.attempts,
            "retries": self.retries,
            "failing": self._failures > 0,
            "next_attempt_in_s": round(max(0.0, self._blocked_until - time.monotonic()), 2),
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for: delta-seconds or an HTTP-date. None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


def request_error(exc: requests.RequestException) -> str:
    """urllib3's innermost reason ("Failed to establish a new connection: [Errno 111] Connection refused")."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = str(reason or exc)
    if text.startswith("HTTP") and "): " in text:  # "HTTPConnection(host=..., port=...): ..."
        text = text.split("): ", 1)[1]
    return text[:200]


class PublisherWithHttp:
    """Wraps the line's outbox: every event goes to MQTT, and to each HTTP action that wants it,
    in one commit."""

    def __init__(self, outbox, actions: list[HttpAction]):
        self._outbox = outbox
        self._actions = actions

    def publish_event(self, line: str, event: dict) -> None:
        wanted = [action for action in self._actions if action.wants(event)]
        self._outbox.publish_event(line, event, http_targets=[action.target for action in wanted])
        for action in wanted:
            action.notify()

    def publish_crop(self, line: str, event_id: str, index: int, jpeg: bytes, meta: dict) -> None:
        self._outbox.publish_crop(line, event_id, index, jpeg, meta)
