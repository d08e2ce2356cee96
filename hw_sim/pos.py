"""A simulated POS or webhook receiver: a real HTTP server on loopback.

It records every POST (its Idempotency-Key, body and the answer given) and can be made to
misbehave: answer with any status (5xx, 429 with Retry-After, 4xx), hang before answering,
or go down altogether (stop(): connections refused, the open ones reset) and come back on
the same port (start()).

A call counts as applied when the POS decides to answer it 2xx, as a real POS would have
booked the transaction before its answer is on the wire: an answer lost on the way back
(the client timed out, the link broke) still counts, and the client's retry is a repeat.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import server_port


@dataclass(frozen=True)
class PosRequest:
    t_mono: float
    path: str
    key: str | None  # the Idempotency-Key header
    body: bytes
    status: int | None  # the answer decided on; None: none (yet): hanging, or hung until the POS went down
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # as sent (names as the client wrote them)

    def json(self) -> dict:
        return json.loads(self.body)


class SimPos:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._address = (host, port or server_port(host))  # kept across stop() and start()
        self._lock = threading.Lock()
        self._requests: list[PosRequest] = []
        self._script: list[tuple[int, float | str | None]] = []  # (status, Retry-After) for the next requests
        self._status = 200
        self._retry_after: float | str | None = None
        self._hang_s = 0.0
        self._down = threading.Event()  # set while stopped: wakes hung handlers, which then answer nothing
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- behaviour -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2] if self._server else self._address
        return f"http://{host}:{port}/events"

    def answer(self, status: int = 200, retry_after: float | str | None = None, hang_s: float = 0.0) -> None:
        """How every request is answered from now on: the status (with a Retry-After header), after hang_s."""
        with self._lock:
            self._status, self._retry_after, self._hang_s = status, retry_after, hang_s

    def script(self, *answers: int | tuple[int, float | str | None]) -> None:
        """Answers for the next requests, in order (a status, or (status, Retry-After)); then answer() applies."""
        with self._lock:
            self._script.extend(a if isinstance(a, tuple) else (a, None) for a in answers)

    # -- what arrived ----------------------------------------------------------------------------

    def requests(self) -> list[PosRequest]:
        with self._lock:
            return list(self._requests)

    def applied(self) -> Counter:
        """Idempotency keys answered 2xx, and how many times each."""
        return Counter(r.key for r in self.requests() if r.status is not None and 200 <= r.status < 300)

    def attempts(self, key: str) -> list[PosRequest]:
        return [r for r in self.requests() if r.key == key]

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again, on the same port after a stop())."""
        pos = self
        self._down.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a client's session uses it

            def setup(self):
                super().setup()
                # Headers and body go out as two writes: without this, Nagle's algorithm holds the body
                # back until the client's delayed ACK (40 ms). Real servers (nginx, ...) set it too.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with pos._lock:
                    pos._connections.add(self.connection)

            def finish(self):
                with pos._lock:
                    pos._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass  # the connection was reset by stop()

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                index = pos._arrived(self.path, self.headers.get("Idempotency-Key"), body, dict(self.headers.items()))
                status, retry_after, hang_s = pos._next_answer()
                if hang_s and pos._down.wait(hang_s):
                    self.close_connection = True  # went down while hanging: no answer at all
                    return
                pos._answered(index, status)
                reply = json.dumps({"status": status}).encode()
                try:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    self.close_connection = True  # the client gave up waiting: its retry is a repeat

            def log_message(self, *args):  # quiet: the test output is not an access log
                pass

        self._server = ThreadingHTTPServer(self._address, Handler)
        self._server.daemon_threads = True
        self._address = self._server.server_address[:2]  # keep the port for a restart
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-pos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go down: stop listening, reset the open connections, and hung requests get no answer."""
        if self._server is None:
            return
        self._down.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2.0)
        self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _next_answer(self) -> tuple[int, float | str | None, float]:
        with self._lock:
            if self._script:
                status, retry_after = self._script.pop(0)
                return status, retry_after, 0.0
            return self._status, self._retry_after, self._hang_s

    def _arrived(self, path: str, key: str | None, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            self._requests.append(PosRequest(time.monotonic(), path, key, body, None, headers))
            return len(self._requests) - 1

    def _answered(self, index: int, status: int) -> None:
        with self._lock:
            self._requests[index] = dataclasses.replace(self._requests[index], status=status)
