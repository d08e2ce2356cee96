"""A simulated camera: serves whatever is in front of it as a JPEG snapshot over HTTP, and as a
live MJPEG stream (multipart/x-mixed-replace, as IP cameras serve it) at `stream_fps`.

The agent reads the snapshot through its ordinary `http_snapshot` source and the stream through
its `stream` source (OpenCV's FFmpeg backend), the same code that reads a real camera. Faults can
be injected into snapshots: HTTP errors, garbage bytes, a stall.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler

import cv2
import numpy as np

from .http_thread import HttpThread


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the image as JPEG")
    return data.tobytes()


class SimCamera:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, stream_fps: float = 15.0, latency_s: float = 0.0):
        self._address = (host, port)
        self.stream_fps = stream_fps
        self.latency_s = latency_s  # every snapshot takes this long (exposure plus a slow sensor)
        self._jpeg = b""
        self._loop: list[bytes] = []  # what the stream cycles through (sensor noise), else _jpeg
        self._script: list[bytes] = []  # stream frames to play once, first (see play)
        self._stopped = threading.Event()
        self.stream_frames = 0
        self._sequence: list[bytes] = []
        self._lock = threading.Lock()
        self._faults: list[str] = []
        self._server: HttpThread | None = None
        self.requests = 0

    @property
    def url(self) -> str:
        host, port = self._server.address if self._server else self._address
        return f"http://{host}:{port}/snapshot.jpg"

    @property
    def stream_url(self) -> str:
        return self.url.replace("/snapshot.jpg", "/stream.mjpg")

    def show(self, jpeg: bytes | list[bytes]) -> None:
        """What the camera sees from now on; several images: the stream cycles through them (a
        still scene with fresh sensor noise in each frame), a snapshot gets the first."""
        jpegs = [jpeg] if isinstance(jpeg, bytes) else list(jpeg)
        if not jpegs:
            raise ValueError("show needs at least one image")
        with self._lock:
            self._jpeg = jpegs[0]
            self._loop = jpegs
            self._script = []
            self._sequence = []

    def play(self, frames: list[bytes], then: bytes | list[bytes]) -> None:
        """The stream shows each of frames once, one per frame period (a hand putting products
        down), then what show(then) shows; snapshots show `then` from now on."""
        self.show(then)
        with self._lock:
            self._script = list(frames)

    def show_sequence(self, jpegs: list[bytes]) -> None:
        """A scene that changes from one snapshot to the next (a part settling, a lamp warming):
        the next requests get these in order, then the last one stays."""
        if not jpegs:
            raise ValueError("show_sequence needs at least one image")
        with self._lock:
            self._jpeg = jpegs[-1]
            self._loop = [jpegs[-1]]
            self._sequence = list(jpegs[:-1])

    def inject(self, fault: str, count: int = 1) -> None:
        """Make the next `count` snapshots fail: "http_error", "garbage" or "stall" (2 s)."""
        if fault not in ("http_error", "garbage", "stall"):
            raise ValueError(f"unknown camera fault {fault!r}")
        with self._lock:
            self._faults.extend([fault] * count)

    def _next(self) -> tuple[str | None, bytes]:
        with self._lock:
            self.requests += 1
            if self._faults:
                return self._faults.pop(0), self._sequence[0] if self._sequence else self._jpeg
            return None, self._sequence.pop(0) if self._sequence else self._jpeg

    def _stream_frame(self, index: int) -> bytes:
        with self._lock:
            self.stream_frames += 1
            if self._script:
                return self._script.pop(0)
            loop = self._loop or [self._jpeg]
            return loop[index % len(loop)]

    def _serve_stream(self, handler: BaseHTTPRequestHandler) -> None:
        """multipart/x-mixed-replace JPEGs at stream_fps, paced in real time, until the client leaves."""
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        period = 1.0 / self.stream_fps
        next_t = time.monotonic()
        index = 0
        while not self._stopped.is_set():
            jpeg = self._stream_frame(index)
            index += 1
            try:
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                    + jpeg + b"\r\n")
                handler.wfile.flush()
            except OSError:
                return  # the client left
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # fell behind (a loaded machine): no burst to catch up
                next_t, delay = time.monotonic(), 0.0
            if delay > 0 and self._stopped.wait(delay):
                return

    def start(self) -> None:
        camera = self
        self._stopped.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] == "/stream.mjpg":
                    camera._serve_stream(self)
                    return
                if self.path.split("?")[0] != "/snapshot.jpg":
                    self.send_error(404)
                    return
                fault, jpeg = camera._next()
                if fault == "http_error":
                    self.send_error(503, "sensor fault")
                    return
                if fault == "stall":
                    time.sleep(2.0)
                elif camera.latency_s:
                    time.sleep(camera.latency_s)
                if fault == "garbage":
                    jpeg = b"\xff\xd8 this is not a JPEG " * 20
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                try:
                    self.wfile.write(jpeg)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a stall fault outlasting its timeout): expected

            def log_message(self, *args):  # quiet: the test output is not an access log
                pass

        self._server = HttpThread(self._address, Handler, "sim-camera")

    def stop(self) -> None:
        self._stopped.set()  # ends the streams being served
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
