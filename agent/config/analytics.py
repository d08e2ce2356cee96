"""Config of a stream line's surveillance analytics: `lines.NAME.analytics` of a `type: stream` line.

    analytics:
      tracking: {high_score: 0.5, low_score: 0.1, min_hits: 3, max_misses: 15, max_lost_s: 3}
      alert_crops: [loitering]
      cameras:
        gate:
          zones:
            - {name: yard, polygon: [[40, 300], [600, 300], [600, 470], [40, 470]], classes: [person], loiter_s: 60}
          tripwires:
            - {name: entrance, line: [[0, 260], [640, 260]], directions: [forward, backward]}

Every camera of the line is tracked once `analytics` is there; `cameras.NAME` adds its zones and
tripwires. Coordinates are frame pixels of that camera. Defaults come from the runtime settings
(agent.postprocess), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..postprocess.analytics import ALERT_KINDS, CameraAnalytics
from ..postprocess.tracking import TrackerSettings
from ..postprocess.zones import TripwireSettings, ZoneSettings, polygon_problem
from .base import ID_PATTERN as _ID
from .base import Strict

Anchor = Literal["bottom_center", "center", "top_center"]
_T = TrackerSettings  # the defaults
_Z = ZoneSettings


class TrackingConfig(Strict):
    high_score: float = Field(_T.high_score, gt=0, lt=1)
    low_score: float = Field(_T.low_score, gt=0, lt=1)
    birth_score: float | None = Field(_T.birth_score, gt=0, lt=1)
    match_iou: float = Field(_T.match_iou, gt=0, le=1)
    low_match_iou: float = Field(_T.low_match_iou, gt=0, le=1)
    tentative_match_iou: float = Field(_T.tentative_match_iou, gt=0, le=1)
    buffer: float = Field(_T.buffer, ge=0, le=2)
    lost_buffer_per_s: float = Field(_T.lost_buffer_per_s, ge=0, le=5)
    min_hits: int = Field(_T.min_hits, ge=1, le=100)
    max_misses: int = Field(_T.max_misses, ge=1, le=100000)
    max_lost_s: float = Field(_T.max_lost_s, gt=0, le=86400)
    max_tracks: int = Field(_T.max_tracks, ge=1, le=100000)

    @model_validator(mode="after")
    def _scores_in_order(self):
        if self.low_score > self.high_score:
            raise ValueError(f"low_score {self.low_score} must not be over high_score {self.high_score}")
        if self.birth_score is not None and self.birth_score < self.low_score:
            raise ValueError(f"birth_score {self.birth_score} must not be under low_score {self.low_score}")
        return self

    def settings(self) -> TrackerSettings:
        return TrackerSettings(**self.model_dump())


class ZoneConfig(Strict):
    name: str = Field(pattern=_ID)
    polygon: list[tuple[float, float]]  # [[x, y], ...] in frame pixels, in order around the zone
    classes: list[str] | None = None  # None: every class the detector knows
    anchor: Anchor = _Z.anchor  # the point of a track's box that must be inside
    hysteresis: float = Field(_Z.hysteresis, ge=0, le=2)  # share of the box height past the edge
    events: list[Literal["enter", "exit"]] = ["enter", "exit"]  # which to publish (occupancy counts all)
    loiter_s: float | None = Field(_Z.loiter_s, gt=0, le=7 * 86400)  # None: no loitering alerts

    @field_validator("polygon")
    @classmethod
    def _usable_polygon(cls, value):
        problem = polygon_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def settings(self) -> ZoneSettings:
        return ZoneSettings(self.name, tuple(self.polygon), _classes(self.classes), self.anchor, self.hysteresis,
                            frozenset(self.events), self.loiter_s)


class TripwireConfig(Strict):
    name: str = Field(pattern=_ID)
    line: tuple[tuple[float, float], tuple[float, float]]  # [[x, y], [x, y]]: a -> b, frame pixels
    classes: list[str] | None = None
    anchor: Anchor = TripwireSettings.anchor
    hysteresis: float = Field(TripwireSettings.hysteresis, ge=0, le=2)
    # forward: from the left of a -> b to its right as the picture shows it
    directions: list[Literal["forward", "backward"]] = ["forward", "backward"]

    @field_validator("line")
    @classmethod
    def _two_points(cls, value):
        (ax, ay), (bx, by) = value
        if abs(ax - bx) < 1 and abs(ay - by) < 1:
            raise ValueError("a tripwire needs two different points [[x, y], [x, y]]")
        return value

    def settings(self) -> TripwireSettings:
        return TripwireSettings(self.name, self.line[0], self.line[1], _classes(self.classes), self.anchor,
                                self.hysteresis, frozenset(self.directions))


class CameraAnalyticsConfig(Strict):
    zones: list[ZoneConfig] = []
    tripwires: list[TripwireConfig] = []

    @model_validator(mode="after")
    def _names_unique(self):
        names = [z.name for z in self.zones] + [w.name for w in self.tripwires]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"the name {twice[0]!r} is used twice among this camera's zones and tripwires")
        return self


class StreamAnalyticsConfig(Strict):
    tracking: TrackingConfig = TrackingConfig()
    cameras: dict[str, CameraAnalyticsConfig] = {}
    alert_crops: list[Literal[ALERT_KINDS]] = ["loitering"]  # alert kinds that get a JPEG crop of the track

    def reference_issues(self, line_cameras: Iterable[str], labels: Iterable[str] | None = None
                         ) -> list[tuple[tuple, str]]:
        """(path below `analytics`, message) for cameras not on the line and, given the detector's
        labels, classes it cannot report."""
        line_cameras, issues = list(line_cameras), []
        for cam, conf in self.cameras.items():
            if cam not in line_cameras:
                issues.append((("cameras", cam), f"camera {cam!r} is not one of the line's cameras "
                                                 f"({', '.join(line_cameras) or 'none'})"))
            if labels is None:
                continue
            known = set(labels)
            for kind, rules in (("zones", conf.zones), ("tripwires", conf.tripwires)):
                for i, rule in enumerate(rules):
                    for label in rule.classes or ():
                        if label not in known:
                            issues.append((("cameras", cam, kind, i, "classes"),
                                           f"the detector has no class {label!r} (it has {', '.join(sorted(known))})"))
        return issues

    def build(self, cameras: Iterable[str]) -> dict[str, CameraAnalytics]:
        """One CameraAnalytics per camera of the line, for StreamLine(analytics=...)."""
        tracking = self.tracking.settings()
        out = {}
        for cam in cameras:
            conf = self.cameras.get(cam, CameraAnalyticsConfig())
            out[cam] = CameraAnalytics(cam, tracking, [z.settings() for z in conf.zones],
                                       [w.settings() for w in conf.tripwires], alert_crops=frozenset(self.alert_crops))
        return out


def _classes(classes: list[str] | None) -> frozenset[str] | None:
    return None if classes is None else frozenset(classes)
