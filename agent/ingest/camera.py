"""The HTTP snapshot camera: a still fetched on demand. Live sources are in `sources.py`;
both have the same interface (`sources.Source`)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np

from ..events import Frame

log = logging.getLogger(__name__)


class HttpSnapshotCamera:
    """A camera that serves a still image (JPEG/PNG) on an HTTP URL, fetched on demand.

    Industrial and IP cameras offer this as a "snapshot" URL; the simulator's camera does too.
    `grab()` returns None on any failure (timeout, HTTP error, undecodable bytes) and counts it:
    the caller turns that into a no-read.
    """

    def __init__(self, name: str, url: str, timeout_s: float = 0.5):
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self._seq = 0
        self._lock = threading.Lock()
        self.frames = 0
        self.failures = 0
        self.last_error: str | None = None
        self._online: bool | None = None

    def start(self) -> None:
        """Nothing runs between grabs."""

    def expect(self, t_mono: float, frames: int = 1) -> None:
        """A fetch starts when the line asks, which is at or after the trigger anyway."""

    def grab_burst(self, after: float | None, count: int, timeout_s: float | None = None) -> list[Frame]:
        """count stills fetched one after the other; stops at the first failure."""
        frames = []
        for _ in range(count):
            frame = self.grab(after, timeout_s)
            if frame is None:
                break
            frames.append(frame)
        return frames

    def next_frame(self, timeout_s: float) -> Frame | None:
        return self.grab()

    def grab(self, after: float | None = None, timeout_s: float | None = None) -> Frame | None:
        t_mono, t_wall = time.monotonic(), time.time()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s if timeout_s is None else timeout_s) as response:
                data = response.read()
            # cv2.imdecode raises (not returns None) on an empty body: an empty reply is no frame.
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
            if image is None:
                raise ValueError(f"undecodable image ({len(data)} bytes)")
        except (OSError, ValueError, urllib.error.URLError, cv2.error) as exc:
            self._failed(exc)
            return None
        with self._lock:
            self._seq += 1
            self.frames += 1
            seq = self._seq
        self._set_online(True)
        return Frame(camera=self.name, seq=seq, image=image, t_mono=t_mono, t_wall=t_wall)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._set_online(False):
            log.warning("camera %s: no frame from %s (%s)", self.name, self.url, self.last_error)

    def _set_online(self, online: bool) -> bool:
        changed = self._online is not online
        if changed and online and self._online is not None:
            log.info("camera %s: frames again from %s", self.name, self.url)
        self._online = online
        return changed

    def stats(self) -> dict:
        return {"type": "http_snapshot", "online": bool(self._online), "frames": self.frames, "failures": self.failures,
                "last_error": self.last_error}

    def close(self) -> None:
        """Nothing is held open between grabs."""
