"""HTTP actions against a real local HTTP server: idempotency key, retries with backoff, and a
receiver that is down or hangs never blocking the caller."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.act.http import HttpAction, HttpActionSettings, PublisherWithHttp

pytestmark = pytest.mark.timeout(60)


class Receiver:
    """A POS/webhook on loopback. `script` is the status for each successive request (then 200)."""

    def __init__(self, script=(), delay_s: float = 0.0):
        self.requests: list[tuple[float, dict, dict]] = []
        self.script = list(script)
        self.delay_s = delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((time.monotonic(), dict(self.headers), body))
                time.sleep(outer.delay_s)
                status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2)


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _event(n: int, result: str = "reject") -> dict:
    return {"event_id": f"evt-{n}", "result": result, "inspection_id": n}


def test_retries_with_backoff_and_the_same_idempotency_key():
    with Receiver(script=[503, 500]) as pos:
        action = HttpAction(HttpActionSettings(pos.url, backoff_s=0.1, retries=3))
        action.start()
        try:
            assert action.submit(_event(1))
            assert wait_until(lambda: action.stats()["sent"] >= 1, 5)
        finally:
            action.close()
    first_three = [r for r in pos.requests if r[2]["event_id"] == "evt-1"]
    assert [r[1]["Idempotency-Key"] for r in first_three] == ["evt-1"] * 3
    gaps = [b[0] - a[0] for a, b in zip(first_three, first_three[1:])]
    assert 0.09 < gaps[0] < 0.5 and gaps[1] > gaps[0] * 1.5  # 0.1 s, then 0.2 s
    assert action.stats()["retries"] == 2 and action.stats()["failed"] == 0


def test_a_refusing_receiver_is_not_retried_and_results_are_filtered():
    with Receiver(script=[400]) as pos:
        action = HttpAction(HttpActionSettings(pos.url, on=frozenset({"reject"}), backoff_s=0.05))
        action.start()
        try:
            assert action.submit(_event(1)) and not action.submit(_event(2, "pass"))
            assert wait_until(lambda: action.stats()["failed"] == 1, 5)
        finally:
            action.close()
    assert len(pos.requests) == 1 and "HTTP 400" in action.stats()["last_error"]


def test_a_hung_or_dead_receiver_never_blocks_the_line():
    class Inner:
        events = []

        def publish_event(self, line, event):
            self.events.append(event)

        def publish_crop(self, *args):
            pass

    with Receiver(delay_s=2.0) as hung:
        hung_action = HttpAction(HttpActionSettings(hung.url, timeout_s=0.2, retries=1, backoff_s=0.05))
        dead_action = HttpAction(HttpActionSettings("http://127.0.0.1:9/events", timeout_s=0.2, retries=1,
                                                    backoff_s=0.05, queue_size=5))
        for action in (hung_action, dead_action):
            action.start()
        publisher = PublisherWithHttp(Inner(), [hung_action, dead_action])
        try:
            started = time.monotonic()
            for n in range(20):
                publisher.publish_event("line", _event(n))
            assert time.monotonic() - started < 0.05
            assert len(Inner.events) == 20
            assert dead_action.stats()["dropped"] >= 14  # bounded: the oldest go first
            assert wait_until(lambda: hung_action.stats()["retries"] >= 1, 3)
        finally:
            started = time.monotonic()
            hung_action.close(timeout_s=0.2)
            dead_action.close(timeout_s=0.2)
            assert time.monotonic() - started < 2.5
    assert "Timeout" in hung_action.stats()["last_error"] or "timed out" in hung_action.stats()["last_error"]
