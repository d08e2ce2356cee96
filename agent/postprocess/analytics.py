"""One camera's surveillance analytics: its tracker, then its zones and tripwires, per inferred frame.

The stream line's deliver thread feeds it every inferred frame of its camera, empty ones included
(a frame without an object is what ends tracks), in the order the frames were read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..events import Detection
from .tracking import Tracker, TrackerSettings
from .zones import Alert, Tripwire, TripwireSettings, Zone, ZoneSettings

log = logging.getLogger(__name__)

ALERT_KINDS = ("zone_enter", "zone_exit", "loitering", "line_cross")


@dataclass(frozen=True)
class AnalyticsResult:
    track_ids: tuple[int | None, ...]  # per detection passed in: its confirmed track, or None
    alerts: tuple[Alert, ...]


class CameraAnalytics:
    """Not thread-safe: one per camera, fed from one thread."""

    def __init__(self, camera: str, tracking: TrackerSettings = TrackerSettings(),
                 zones: Sequence[ZoneSettings] = (), tripwires: Sequence[TripwireSettings] = (),
                 alert_crops: frozenset[str] = frozenset({"loitering"})):
        """alert_crops: the alert kinds whose events get a JPEG crop of the track."""
        names = [z.name for z in zones] + [w.name for w in tripwires]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"camera {camera}: the name {twice[0]!r} is used twice among its zones and tripwires")
        unknown = sorted(set(alert_crops) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"alert_crops: unknown alert kind {unknown[0]!r} (kinds: {', '.join(ALERT_KINDS)})")
        self.camera = camera
        self.alert_crops = frozenset(alert_crops)
        self.tracker = Tracker(tracking)
        self.zones = [Zone(z) for z in zones]
        self.tripwires = [Tripwire(w) for w in tripwires]
        self._checked_size: tuple[int, int] | None = None
        self.counters = dict.fromkeys(ALERT_KINDS, 0)

    @property
    def low_score(self) -> float:
        """The detector must report detections down to this score for the tracker's second stage."""
        return self.tracker.settings.low_score

    def update(self, t: float, detections: list[Detection], frame_size: tuple[int, int] | None = None
               ) -> AnalyticsResult:
        """t: the frame's monotonic time; frame_size: (width, height), checked against the geometry once."""
        if frame_size is not None and frame_size != self._checked_size:
            self._checked_size = frame_size
            self._check_geometry(*frame_size)
        update = self.tracker.update(t, detections)
        alerts: list[Alert] = []
        for rule in (*self.zones, *self.tripwires):
            alerts += rule.update(t, update.tracks, update.ended)
        for alert in alerts:
            self.counters[alert.kind] += 1
        return AnalyticsResult(update.track_ids, tuple(alerts))

    def _check_geometry(self, width: int, height: int) -> None:
        for zone in self.zones:
            x1, y1, x2, y2 = zone.polygon.bounds()
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                log.warning("camera %s: zone %s reaches outside the %dx%d picture: check its coordinates "
                            "(frame pixels)", self.camera, zone.settings.name, width, height)
        for wire in self.tripwires:
            points = (wire.settings.a, wire.settings.b)
            if any(not (0 <= x <= width and 0 <= y <= height) for x, y in points):
                log.warning("camera %s: tripwire %s reaches outside the %dx%d picture: check its coordinates "
                            "(frame pixels)", self.camera, wire.settings.name, width, height)

    def health(self) -> dict:
        return {
            "tracks": self.tracker.active, **self.tracker.counters, "alerts": dict(self.counters),
            "zones": {z.settings.name: {"occupancy": z.occupancy(), **_copy(z.counters)} for z in self.zones},
            "tripwires": {w.settings.name: _copy(w.counters) for w in self.tripwires},
        }


def _copy(counters: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """For another thread's health read: the outer keys never change, dict() of one is atomic."""
    return {key: dict(value) for key, value in counters.items()}
