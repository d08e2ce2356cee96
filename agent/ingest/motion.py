"""The motion trigger: fires a line when something moves in front of its camera.

Frame differencing on a small grayscale copy of each frame, the approach Frigate uses:

    grayscale -> downscale (INTER_AREA) -> blur -> compensate global lighting
      -> |frame - background| > threshold -> ignore masked pixels -> changed fraction
      -> motion when the fraction is at least min_area (and under lighting_limit)

The background is a running average, so a scene that changes slowly (daylight, a part that
stays) is absorbed. Global lighting changes (a lamp's gain flicker, auto exposure) are taken
out by a robust gain/offset fit of the frame to the background before differencing; a change
over most of the picture is treated as lighting, not motion, and resets the background.

It costs well under 1 ms per 640x480 frame (see hw_sim/bench_ingest.py), and the detector
behind the trigger runs only on motion.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from ..events import Frame

log = logging.getLogger(__name__)

Polygon = Sequence[Sequence[float]]  # [[x, y], ...] in source-frame pixels


@dataclass(frozen=True)
class MotionSettings:
    scale_height: int = 120  # rows of the small copy that is differenced
    threshold: int = 25  # sensitivity: a pixel changed if it differs from the background by more (0-255)
    min_area: float = 0.01  # fraction of the unmasked picture that must change
    lighting_limit: float = 0.8  # a change over more than this fraction is lighting, not motion
    background_alpha: float = 0.05  # how fast the background follows the picture, per frame
    mask: tuple[Polygon, ...] = ()  # polygons (source-frame pixels) where motion is ignored


@dataclass(frozen=True)
class Motion:
    area: float  # changed fraction of the unmasked picture
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the changed pixels, source-frame pixels


class MotionDetector:
    """Per-frame motion decision. Not thread-safe: one detector per camera consumer."""

    def __init__(self, settings: MotionSettings = MotionSettings()):
        if not 0 < settings.min_area < settings.lighting_limit <= 1:
            raise ValueError("need 0 < min_area < lighting_limit <= 1")
        self.settings = settings
        self._frame_size: tuple[int, int] | None = None
        self._small_size = (0, 0)
        self._active: np.ndarray | None = None  # uint8 255 where motion counts
        self._active_count = 1
        self._sample: np.ndarray | None = None  # flat indices of the pixels used for the lighting fit
        self._background: np.ndarray | None = None
        self.lighting_resets = 0
        self.last_area = 0.0

    def reset(self) -> None:
        self._background = None

    def _setup(self, width: int, height: int) -> None:
        small_h = min(self.settings.scale_height, height)
        small_w = max(1, round(width * small_h / height))
        self._frame_size, self._small_size = (width, height), (small_w, small_h)
        active = np.full((small_h, small_w), 255, np.uint8)
        sx, sy = small_w / width, small_h / height
        for polygon in self.settings.mask:
            points = np.round(np.asarray(polygon, np.float64) * (sx, sy)).astype(np.int32)
            cv2.fillPoly(active, [points], 0)
        self._active = active
        self._active_count = max(1, cv2.countNonZero(active))
        flat = np.flatnonzero(active.ravel())
        step = max(1, len(flat) // 2000)
        self._sample = flat[::step]
        self._background = None

    def _small(self, image: np.ndarray) -> np.ndarray:
        # Grey first: converting the full frame and then averaging one channel is half the cost.
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = cv2.resize(gray, self._small_size, interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        return small.astype(np.float32)

    def _match_lighting(self, small: np.ndarray) -> np.ndarray:
        """The background under the frame's lighting: a gain/offset fit that ignores movers."""
        background = self._background
        x = background.ravel()[self._sample]
        y = small.ravel()[self._sample]
        gain = float(np.median(y)) / max(float(np.median(x)), 1.0)
        keep = np.abs(y - gain * x) < 2 * self.settings.threshold  # drop pixels an object covers
        if keep.sum() > 0.25 * len(x):
            x, y = x[keep], y[keep]
            mx, my = float(x.mean()), float(y.mean())
            var = float(((x - mx) ** 2).mean())
            if var > 1.0:
                gain = float(((x - mx) * (y - my)).mean()) / var
                gain = min(max(gain, 0.5), 2.0)
            offset = my - gain * mx
        else:
            offset = 0.0
        return cv2.convertScaleAbs(background, alpha=gain, beta=offset)

    def detect(self, image: np.ndarray) -> Motion | None:
        height, width = image.shape[:2]
        if self._frame_size != (width, height):
            self._setup(width, height)
        small = self._small(image)
        if self._background is None:
            self._background = small
            return None
        expected = self._match_lighting(small)
        diff = cv2.absdiff(small.astype(np.uint8), expected)
        _, changed = cv2.threshold(diff, self.settings.threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.bitwise_and(changed, self._active)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, _KERNEL)  # lone pixels are noise
        area = cv2.countNonZero(changed) / self._active_count
        self.last_area = area
        if area > self.settings.lighting_limit:
            self.lighting_resets += 1
            self._background = small
            return None
        cv2.accumulateWeighted(small, self._background, self.settings.background_alpha)
        if area < self.settings.min_area:
            return None
        x, y, w, h = cv2.boundingRect(changed)
        sx = self._frame_size[0] / self._small_size[0]
        sy = self._frame_size[1] / self._small_size[1]
        box = (int(x * sx), int(y * sy), int(round((x + w) * sx)), int(round((y + h) * sy)))
        return Motion(area=area, box=box)


_KERNEL = np.ones((3, 3), np.uint8)


class FrameSource(Protocol):
    """What the motion trigger reads: any agent.ingest.sources.Source."""

    name: str

    def next_frame(self, timeout_s: float) -> Frame | None: ...


class MotionTrigger:
    """Reads every frame of a camera on its own thread; calls `on_fire(t_mono)` when motion starts.

    Motion starts on the first moving frame after `quiet_frames` still ones, so an object
    entering fires once, not on every frame it moves in (nor again as it leaves). t_mono is
    that frame's capture time, so the line's triggered capture gets that very frame. After a
    fire, new motion is ignored for `cooldown_s`; `max_fps` caps how many frames are examined
    (None: every frame the camera delivers). `repeat_s`: while motion goes on without a still
    frame, fire again every repeat_s (None: once per start). A combination that wants "motion
    near the moment the weight settled" needs it: a hand that hovers, or the ghost of products
    just taken off fading from the background, is motion that never starts anew.
    """

    def __init__(self, source: FrameSource, detector: MotionDetector, on_fire: Callable[[float], object],
                 cooldown_s: float = 1.0, max_fps: float | None = None, quiet_frames: int = 2,
                 name: str = "motion", repeat_s: float | None = None):
        self._source = source
        self._detector = detector
        self._on_fire = on_fire
        self._cooldown_s = cooldown_s
        self._min_interval = 1.0 / max_fps if max_fps else 0.0
        self._quiet_frames = max(1, quiet_frames)
        self._repeat_s = repeat_s
        self._still = self._quiet_frames  # still frames in a row; the scene starts out quiet
        self._stop = threading.Event()
        self._last_fire = -1e9
        self._ms = 0.0
        self.counters = dict.fromkeys(("frames", "motion_frames", "fires", "repeats", "cooldown_suppressed"), 0)
        self._thread = threading.Thread(target=self._run, name=f"{name}-motion", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_checked = 0.0
        while not self._stop.is_set():
            try:
                frame = self._source.next_frame(0.5)
            except Exception:  # a camera bug must not end motion detection for good
                log.exception("motion: reading %s failed", getattr(self._source, "name", "camera"))
                self._stop.wait(1.0)
                continue
            if frame is None:
                continue
            if frame.t_mono - last_checked < self._min_interval:
                continue
            last_checked = frame.t_mono
            start = time.perf_counter()
            try:
                motion = self._detector.detect(frame.image)
            except Exception:
                log.exception("motion: detection failed on frame %d", frame.seq)
                continue
            self._ms = 0.95 * self._ms + 0.05 * (time.perf_counter() - start) * 1000 if self._ms else \
                (time.perf_counter() - start) * 1000
            self.counters["frames"] += 1
            if motion is None:
                self._still += 1
                continue
            self.counters["motion_frames"] += 1
            starts = self._still >= self._quiet_frames
            self._still = 0
            repeats = not starts and self._repeat_s is not None and frame.t_mono - self._last_fire >= self._repeat_s
            if not starts and not repeats:
                continue
            if frame.t_mono - self._last_fire < self._cooldown_s:
                self.counters["cooldown_suppressed"] += 1
                continue
            self._last_fire = frame.t_mono
            self.counters["fires"] += 1
            self.counters["repeats"] += repeats
            self._on_fire(frame.t_mono)

    def stats(self) -> dict:
        return {
            "type": "motion", **self.counters, "lighting_resets": self._detector.lighting_resets,
            "last_area": round(self._detector.last_area, 4), "ms_per_frame": round(self._ms, 3),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
