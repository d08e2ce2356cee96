"""HTTP actions: POST each inspection event to a local POS or webhook.

This is the only agent module that imports requests.

A POST carries the event JSON and an `Idempotency-Key` header (the event_id), so a
retry after a lost response cannot be applied twice by a receiver that honours it.
Calls run on the action's own thread with a timeout; the line only puts the event on
a queue and never waits. Failures (connection errors, timeouts, 408, 429, 5xx) are
retried with exponential backoff up to `retries` times; other 4xx are the receiver
refusing the event and are not retried.

The retry queue is in memory and bounded (the oldest is dropped when full, and
counted): the SQLite outbox stores MQTT messages only, so an HTTP call pending at a
restart is lost. Every event still reaches MQTT through the outbox.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass

import requests

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class HttpActionSettings:
    url: str
    on: frozenset[str] = frozenset({"reject", "no_read", "pass"})  # event results that are sent
    timeout_s: float = 2.0
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    queue_size: int = 1000
    headers: tuple[tuple[str, str], ...] = ()


class HttpAction:
    def __init__(self, settings: HttpActionSettings, session: requests.Session | None = None, name: str = "webhook"):
        if not settings.url.startswith(("http://", "https://")):
            raise ValueError(f"HTTP action {name}: url {settings.url!r} must start with http:// or https://")
        self.settings = settings
        self.name = name
        self._session = session or requests.Session()
        self._queue: list[tuple[float, int, int, dict]] = []  # (due, order, attempt, event)
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.counters = dict.fromkeys(("submitted", "sent", "retries", "failed", "dropped"), 0)
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"http-{self.name}", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop; calls already due get until timeout_s to go out. Pending retries are dropped (counted)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue and self._queue[0][0] <= time.monotonic() and time.monotonic() < deadline:
                self._cv.wait(0.05)
            self._stopping = True
            self.counters["dropped"] += len(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_s + 0.5)
            self._thread = None
        self._session.close()

    def submit(self, event: dict) -> bool:
        """Queue one event (never blocks). False if the event's result is not one this action sends."""
        if event.get("result") not in self.settings.on:
            return False
        with self._cv:
            if len(self._queue) >= self.settings.queue_size:
                self._queue.remove(min(self._queue, key=lambda item: item[1]))  # the oldest event
                heapq.heapify(self._queue)
                self.counters["dropped"] += 1
            heapq.heappush(self._queue, (time.monotonic(), next(self._order), 0, event))
            self.counters["submitted"] += 1
            self._cv.notify()
        return True

    def stats(self) -> dict:
        with self._cv:
            return {**self.counters, "queued": len(self._queue), "last_error": self.last_error}

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cv.wait(min(1.0, self._queue[0][0] - time.monotonic()) if self._queue else 1.0)
                if self._stopping:
                    return
                _, order, attempt, event = heapq.heappop(self._queue)
            outcome = self._post(event)
            with self._cv:
                if outcome == "sent":
                    self.counters["sent"] += 1
                elif outcome == "retry" and attempt < self.settings.retries and not self._stopping:
                    delay = min(self.settings.backoff_s * 2**attempt, self.settings.backoff_max_s)
                    heapq.heappush(self._queue, (time.monotonic() + delay, order, attempt + 1, event))
                    self.counters["retries"] += 1
                else:
                    self.counters["failed"] += 1
                    log.warning("HTTP action %s: gave up on event %s after %d attempts (%s)", self.name,
                                event.get("event_id"), attempt + 1, self.last_error)
                self._cv.notify_all()

    def _post(self, event: dict) -> str:
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(event.get("event_id", "")),
                   **dict(self.settings.headers)}
        try:
            response = self._session.post(self.settings.url, data=json.dumps(event).encode(), headers=headers,
                                          timeout=self.settings.timeout_s)
        except requests.RequestException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return "retry"
        if response.ok:
            return "sent"
        self.last_error = f"HTTP {response.status_code} from {self.settings.url}"
        return "retry" if response.status_code in _RETRY_STATUSES else "refused"


class PublisherWithHttp:
    """Wraps the line's publisher: every event goes to it, and to each HTTP action that wants it."""

    def __init__(self, inner, actions: list[HttpAction]):
        self._inner = inner
        self._actions = actions

    def publish_event(self, line: str, event: dict) -> None:
        self._inner.publish_event(line, event)
        for action in self._actions:
            action.submit(event)

    def publish_crop(self, line: str, event_id: str, index: int, jpeg: bytes, meta: dict) -> None:
        self._inner.publish_crop(line, event_id, index, jpeg, meta)
