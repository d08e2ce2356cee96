"""Live frame sources: USB/V4L2 cameras, network streams, video files and image folders.

Every source has the same interface (`Source`); the line and the motion trigger never know
which kind they read. A live source runs one reader thread that keeps only the newest frame.

    reader thread:  open -> read, read, read ... -> (end, error or stall) -> close -> backoff -> open
    watchdog:       no frame for `stall_timeout_s` -> offline, counted; a read blocked for
                    `hang_timeout_s` is abandoned and a fresh reader takes over

Triggered capture: a trigger at time t belongs to the first frame read at or after t. The
trigger's wiring calls `expect(t)` at once; the reader hands that frame to the reservation,
so it is kept however many newer frames arrive before the line calls `grab()`. A burst
(`expect(t, frames=n)`, then `grab_burst()`) reserves that frame and the n - 1 read after it.

OpenCV's FFmpeg backend is used for streams and files (RTSP, RTMP, HTTP, UDP). Its open
and read timeouts are set per capture (CAP_PROP_OPEN_TIMEOUT_MSEC / CAP_PROP_READ_TIMEOUT_MSEC),
and the RTSP transport through OPENCV_FFMPEG_CAPTURE_OPTIONS: the defaults (30 s, UDP) are
what makes other agents hang on a dead camera.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from ..events import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Source(Protocol):
    """What a line and a motion trigger need from a camera, whatever kind it is."""

    name: str

    def start(self) -> None: ...

    def expect(self, t_mono: float, frames: int = 1) -> None:
        """A trigger happened at t_mono: keep the first frame read at or after it (and the
        frames - 1 read after that one, for a burst)."""

    def grab(self, after: float | None = None, timeout_s: float | None = None) -> Frame | None:
        """The frame for a trigger (None: no frame in time, a no-read)."""

    def grab_burst(self, after: float | None, count: int, timeout_s: float | None = None) -> list[Frame]:
        """The trigger's frame and up to count - 1 after it ([]: no frame in time, a no-read)."""

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The newest frame this consumer has not seen yet, waiting up to timeout_s."""

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class SourceUnavailable(Exception):
    """The source cannot be opened right now (no device, connection refused, timeout)."""


class EndOfSource(Exception):
    """A finite source (a folder or file without `loop`) has nothing more to give."""


class Reader(Protocol):
    def read(self) -> np.ndarray | None:
        """The next image, or None when the connection ended (the source reconnects)."""

    def close(self) -> None: ...


# Opens a reader; raises SourceUnavailable. `stop` is set when the source closes, so a
# paced reader can sleep on it.
Opener = Callable[[threading.Event], Reader]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between reconnect attempts."""

    initial_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(attempt, 30)))
        # Half fixed, half random: cameras that dropped together don't reconnect in lockstep.
        return ceiling * rng.uniform(0.5, 1.0)


class _Reservation:
    """Frames kept for one trigger: the first read at or after `after`, and count - 1 more."""

    __slots__ = ("after", "count", "frames", "done", "full", "created", "claimed")

    def __init__(self, after: float, count: int = 1):
        self.after = after
        self.count = max(1, count)
        self.claimed = False
        self.frames: list[Frame] = []
        self.done = threading.Event()  # the first frame is in
        self.full = threading.Event()  # all `count` are in (or none will come)
        self.created = time.monotonic()

    @property
    def frame(self) -> Frame | None:
        return self.frames[0] if self.frames else None

    def wants(self, t_mono: float) -> bool:
        return len(self.frames) < self.count and self.after <= t_mono

    def add(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.done.set()
        if len(self.frames) >= self.count:
            self.full.set()

    def release(self) -> None:
        self.done.set()
        self.full.set()


class LiveSource:
    """A camera read continuously by its own thread; see the module docstring."""

    RESERVATION_TTL_S = 30.0  # a reservation nobody claimed (the trigger was dropped) is let go

    def __init__(self, name: str, opener: Opener, kind: str, *, grab_timeout_s: float = 1.0,
                 stall_timeout_s: float = 3.0, hang_timeout_s: float = 10.0, backoff: Backoff = Backoff(),
                 describe: str = "", seed: int | None = None):
        self.name = name
        self.kind = kind
        self._opener = opener
        self._describe = describe or kind
        self._grab_timeout_s = grab_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._hang_timeout_s = max(hang_timeout_s, stall_timeout_s)
        self._backoff = backoff
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._generation = 0
        self._reader_thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._abandoned: list[threading.Thread] = []
        self._blocked: tuple[int, float] | None = None  # (reader generation, since): inside open() or read()
        self._state = "stopped"  # connecting, online, offline, ended, stopped
        self._newest: Frame | None = None
        self._newest_seen = True
        self._streaming = False  # someone reads every frame (next_frame): unseen frames are drops
        self._reservations: deque[_Reservation] = deque()
        self._seq = 0
        self._recent: deque[float] = deque(maxlen=256)  # read times of the latest frames, for fps
        self._last_frame_t: float | None = None
        self.counters = dict.fromkeys(
            ("frames", "dropped", "stalls", "reconnects", "open_failures", "read_ends", "abandoned_reads",
             "grab_timeouts", "grabs_while_offline", "reservations_expired"),
            0,
        )
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._reader_thread is not None:
            return
        self._state = "connecting"
        self._spawn_reader()
        self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
        self._watchdog.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            for reservation in self._reservations:
                reservation.release()
        deadline = time.monotonic() + 2.0  # a shutdown must not wait on a driver
        for thread in [self._reader_thread, self._watchdog, *self._abandoned]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in [self._reader_thread, *self._abandoned] if t is not None and t.is_alive()]
        if stuck:
            log.warning("camera %s: reader still blocked in the backend at close: %s", self.name, ", ".join(stuck))
        self._state = "stopped"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- consumers -------------------------------------------------------------------
    def expect(self, t_mono: float, frames: int = 1) -> None:
        with self._cond:
            self._reserve(t_mono, frames)

    def _reserve(self, after: float, count: int = 1) -> _Reservation:
        reservation = _Reservation(after, count)
        newest = self._newest
        # The trigger came from this very frame (motion) or arrived while it was being read.
        if newest is not None and newest.t_mono >= after:
            reservation.add(newest)
        self._reservations.append(reservation)
        return reservation

    def grab(self, after: float | None = None, timeout_s: float | None = None) -> Frame | None:
        """The frame reserved by `expect(after)` for the trigger at `after`.

        Without a reservation (or with after=None): the first frame read from now on
        (or at/after `after`).
        """
        timeout_s = self._grab_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            reservation = self._claim(after)
            if reservation is None:
                reservation = self._reserve(time.monotonic() if after is None else after)
                reservation.claimed = True
            if not reservation.done.is_set() and self._state in ("offline", "ended", "stopped"):
                self._reservations.remove(reservation)
                self.counters["grabs_while_offline"] += 1
                return None
        reservation.done.wait(timeout_s)
        with self._cond:
            if reservation in self._reservations:
                self._reservations.remove(reservation)
            if reservation.frame is None:
                self.counters["grab_timeouts"] += 1
            return reservation.frame

    def grab_burst(self, after: float | None, count: int, timeout_s: float | None = None) -> list[Frame]:
        """The frames reserved by `expect(after, frames=count)`: the trigger's own first.

        Waits up to timeout_s for the first frame and up to timeout_s more for the rest; a
        reservation made for fewer frames (a trigger without a burst) is extended from now on.
        """
        timeout_s = self._grab_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            reservation = self._claim(after)
            if reservation is None:
                reservation = self._reserve(time.monotonic() if after is None else after, count)
                reservation.claimed = True
            elif reservation.count < count:
                reservation.count = count
                reservation.full.clear()
            if not reservation.done.is_set() and self._state in ("offline", "ended", "stopped"):
                self._reservations.remove(reservation)
                self.counters["grabs_while_offline"] += 1
                return []
        if reservation.done.wait(timeout_s):
            reservation.full.wait(timeout_s)
        with self._cond:
            if reservation in self._reservations:
                self._reservations.remove(reservation)
            if not reservation.frames:
                self.counters["grab_timeouts"] += 1
            return list(reservation.frames)

    def _claim(self, after: float | None) -> _Reservation | None:
        if after is None:
            return None
        for reservation in self._reservations:
            if not reservation.claimed and reservation.after == after:
                reservation.claimed = True
                return reservation
        return None

    def next_frame(self, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._streaming = True
            while self._newest_seen and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._newest_seen:
                return None
            self._newest_seen = True
            return self._newest

    # -- the reader ------------------------------------------------------------------
    def _spawn_reader(self) -> None:
        self._generation += 1
        thread = threading.Thread(target=self._read_loop, args=(self._generation,),
                                  name=f"{self.name}-reader", daemon=True)
        self._reader_thread = thread
        thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    @contextmanager
    def _blocking(self, generation: int):
        self._blocked = (generation, time.monotonic())
        try:
            yield
        finally:
            if self._blocked is not None and self._blocked[0] == generation:
                self._blocked = None

    def _read_loop(self, generation: int) -> None:
        attempt = 0
        opened_before = False
        while self._current(generation):
            if opened_before or attempt:
                self.counters["reconnects"] += 1
            try:
                with self._blocking(generation):
                    reader = self._opener(self._stop)
            except SourceUnavailable as exc:
                self._went_offline(f"cannot open {self._describe}: {exc}", generation)
                self.counters["open_failures"] += 1
                self._stop.wait(self._backoff.delay(attempt, self._rng))
                attempt += 1
                continue
            except EndOfSource as exc:
                self._ended(str(exc))
                return
            except Exception:
                log.exception("camera %s: opening %s failed", self.name, self._describe)
                self.counters["open_failures"] += 1
                self._stop.wait(self._backoff.delay(attempt, self._rng))
                attempt += 1
                continue
            opened_before = True
            reason = "stream ended"
            try:
                while self._current(generation):
                    with self._blocking(generation):
                        image = reader.read()
                    if image is None:
                        break
                    if not self._current(generation):
                        return
                    self._publish(image)
                    attempt = 0
            except EndOfSource as exc:
                self._ended(str(exc))
                return
            except Exception as exc:  # a backend error: reconnect, and show it in health
                reason = f"read failed: {type(exc).__name__}: {exc}"
                log.exception("camera %s: reading %s failed", self.name, self._describe)
            finally:
                try:
                    reader.close()
                except Exception:
                    log.exception("camera %s: closing %s failed", self.name, self._describe)
            if not self._current(generation):
                return
            self.counters["read_ends"] += 1
            self._went_offline(reason, generation)
            self._stop.wait(self._backoff.delay(attempt, self._rng))
            attempt += 1

    def _publish(self, image: np.ndarray) -> None:
        t_mono, t_wall = time.monotonic(), time.time()
        with self._cond:
            self._seq += 1
            frame = Frame(camera=self.name, seq=self._seq, image=image, t_mono=t_mono, t_wall=t_wall)
            self._last_frame_t = t_mono
            self._recent.append(t_mono)
            self.counters["frames"] += 1
            if self._streaming and not self._newest_seen:
                self.counters["dropped"] += 1
            self._newest, self._newest_seen = frame, False
            for reservation in self._reservations:
                if reservation.wants(t_mono):
                    reservation.add(frame)
            was = self._state
            self._state = "online"
            self._cond.notify_all()
        if was != "online":
            log.info("camera %s: online (%s)", self.name, self._describe)

    def _went_offline(self, reason: str, generation: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self.last_error = reason
            was = self._state
            self._state = "offline"
        if was != "offline":
            log.warning("camera %s: offline: %s", self.name, reason)

    def _ended(self, reason: str) -> None:
        with self._cond:
            self._state = "ended"
            self.last_error = reason
            for reservation in self._reservations:
                reservation.release()
            self._cond.notify_all()
        log.info("camera %s: %s", self.name, reason)

    # -- the watchdog ----------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._cond:
                if self._state == "online" and self._last_frame_t is not None \
                        and now - self._last_frame_t > self._stall_timeout_s:
                    self.counters["stalls"] += 1
                    self._state = "offline"
                    self.last_error = f"no frame for {now - self._last_frame_t:.1f} s"
                    log.warning("camera %s: stalled: %s", self.name, self.last_error)
                self._expire_reservations(now)
            blocked = self._blocked
            if blocked is not None and blocked[0] == self._generation and now - blocked[1] > self._hang_timeout_s:
                self._abandon_reader(now - blocked[1])

    def _expire_reservations(self, now: float) -> None:
        for reservation in list(self._reservations):
            if not reservation.claimed and now - reservation.created > self.RESERVATION_TTL_S:
                self._reservations.remove(reservation)
                self.counters["reservations_expired"] += 1

    def _abandon_reader(self, blocked_s: float) -> None:
        """The backend ignored its own timeout: leave that thread and start a fresh one."""
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        with self._cond:
            self._state = "offline"
            self.last_error = f"read blocked for {blocked_s:.1f} s"
        self._blocked = None
        if len(self._abandoned) >= 2:
            # Two readers already stuck in the driver: more would only leak threads.
            return
        log.error("camera %s: reader blocked for %.1f s in %s; starting a new one", self.name, blocked_s, self._describe)
        self.counters["abandoned_reads"] += 1
        if self._reader_thread is not None:
            self._abandoned.append(self._reader_thread)
        self._spawn_reader()

    # -- health ----------------------------------------------------------------------
    def _fps_now(self) -> float:
        window_s = 2.0
        if self._state != "online":
            return 0.0
        return round(sum(1 for t in self._recent if t > time.monotonic() - window_s) / window_s, 1)

    @property
    def online(self) -> bool:
        return self._state == "online"

    def stats(self) -> dict:
        with self._cond:
            age = None if self._last_frame_t is None else round(time.monotonic() - self._last_frame_t, 2)
            return {
                "type": self.kind,
                "online": self._state == "online",
                "state": self._state,
                **self.counters,
                "fps": self._fps_now(),
                "last_frame_age_s": age,
                "pending_triggers": len(self._reservations),
                "last_error": self.last_error,
            }


# -- readers ---------------------------------------------------------------------------

class _Pacer:
    """Releases one frame per period in real time; never bursts to catch up."""

    def __init__(self, fps: float, stop: threading.Event):
        self._period = 1.0 / fps
        self._stop = stop
        self._next: float | None = None

    def wait(self) -> bool:
        now = time.monotonic()
        if self._next is None or self._next < now - self._period:
            self._next = now
        elif self._stop.wait(self._next - now):
            return False
        self._next += self._period
        return True


class _FfmpegOptions:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS is one process-wide variable that OpenCV reads while
    opening a capture. Opens that need the same value run together; a different value waits."""

    VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

    def __init__(self):
        self._cond = threading.Condition()
        self._value: str | None = os.environ.get(self.VARIABLE)
        self._users = 0

    @contextmanager
    def using(self, value: str | None):
        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if self._value != value:
                if value is None:
                    os.environ.pop(self.VARIABLE, None)
                else:
                    os.environ[self.VARIABLE] = value
                self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


_FFMPEG_OPTIONS = _FfmpegOptions()  # mirrors one process-wide environment variable


class _CaptureReader:
    def __init__(self, capture, pacer: _Pacer | None = None, rewind: bool = False):
        self._capture = capture
        self._pacer = pacer
        self._rewind = rewind

    def read(self) -> np.ndarray | None:
        if self._pacer is not None and not self._pacer.wait():
            return None
        ok, image = self._capture.read()
        if not ok and self._rewind:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image

    def close(self) -> None:
        self._capture.release()


def stream_opener(url: str, rtsp_transport: str = "tcp", open_timeout_ms: int = 5000,
                  read_timeout_ms: int = 3000) -> Opener:
    """RTSP, RTMP, HTTP(S), UDP, TCP, SRT streams through OpenCV's FFmpeg backend."""
    options = f"rtsp_transport;{rtsp_transport}" if url.lower().startswith(("rtsp://", "rtsps://")) else None
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)]

    def open_stream(stop: threading.Event) -> Reader:
        with _FFMPEG_OPTIONS.using(options):
            capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable("no stream (refused, timed out or not a video)")
        return _CaptureReader(capture)

    return open_stream


def v4l2_opener(device: int | str, width: int | None = None, height: int | None = None,
                fps: float | None = None, fourcc: str | None = None) -> Opener:
    """A USB/V4L2 camera: /dev/videoN or its index."""

    def open_device(stop: threading.Event) -> Reader:
        if isinstance(device, str) and not os.path.exists(device):
            raise SourceUnavailable(f"{device} does not exist (unplugged?)")
        capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"cannot open V4L2 device {device}")
        if fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            capture.set(cv2.CAP_PROP_FPS, fps)
        return _CaptureReader(capture)

    return open_device


def file_opener(path: str | Path, fps: float | None = None, loop: bool = True) -> Opener:
    """A video file played in real time (at its own frame rate unless fps is given)."""
    path = Path(path)

    def open_file(stop: threading.Event) -> Reader:
        if not path.is_file():
            raise SourceUnavailable(f"no such file: {path}")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"not a video file OpenCV can read: {path}")
        rate = fps or capture.get(cv2.CAP_PROP_FPS) or 15.0
        if not 0 < rate <= 1000:
            rate = 15.0
        reader = _CaptureReader(capture, _Pacer(rate, stop), rewind=loop)
        if loop:
            return reader
        return _FiniteReader(reader, f"end of {path}")

    return open_file


class _FiniteReader:
    def __init__(self, reader: Reader, message: str):
        self._reader, self._message = reader, message

    def read(self) -> np.ndarray | None:
        image = self._reader.read()
        if image is None:
            raise EndOfSource(self._message)
        return image

    def close(self) -> None:
        self._reader.close()


class _FolderReader:
    def __init__(self, files: list[Path], pacer: _Pacer, loop: bool, folder: Path):
        self._files, self._pacer, self._loop, self._folder = files, pacer, loop, folder
        self._index = 0
        self.unreadable = 0

    def read(self) -> np.ndarray | None:
        for _ in range(len(self._files)):
            if self._index >= len(self._files):
                if not self._loop:
                    raise EndOfSource(f"end of {self._folder}")
                self._index = 0
            path = self._files[self._index]
            self._index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.unreadable += 1
                log.warning("folder source: cannot read %s, skipped", path)
                continue
            if not self._pacer.wait():
                return None
            return image
        return None  # nothing readable: reopen later (files may appear)

    def close(self) -> None:
        pass


def folder_opener(path: str | Path, fps: float = 1.0, loop: bool = True) -> Opener:
    """The images of a folder (sorted by name), one every 1/fps seconds."""
    folder = Path(path)

    def open_folder(stop: threading.Event) -> Reader:
        if not folder.is_dir():
            raise SourceUnavailable(f"no such folder: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise SourceUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        return _FolderReader(files, _Pacer(fps, stop), loop, folder)

    return open_folder
