"""Zones, tripwires and loitering over one camera's tracks (agent.postprocess.tracking).

Everything is judged on a track's reference point, by default the bottom centre of its box:
where a person or a vehicle touches the ground, so a zone drawn on the floor means what it shows.

- A zone is a polygon in frame pixels. A track enters when its point is inside, and leaves when
  it is outside, each by at least `hysteresis` of the track's box height (a person 100 px tall
  with the default 0.1 must be 10 px past the edge): a box jittering at the edge does not flap.
  A track that dies inside leaves with reason `lost`. Occupancy per class is the number of live
  tracks inside, hidden ones included.
- Loitering: a track inside a zone with `loiter_s` for at least that long, counted from when it
  entered (or was first seen, if it was born inside). Once per track per zone.
- A tripwire is a directed segment a -> b. A crossing is a track's point moving from one side to
  the other, each side at least `hysteresis` of the box height from the line, on a path that
  passes between a and b. `forward` is from the left of a -> b to its right as the picture shows
  it (y grows downwards): for a line drawn left to right, moving down the picture.

A rule meets a track when the tracker confirms it (a few frames after its first detection) and
starts it from where it was born: a track that crossed a line or entered a zone while it was
still tentative is reported when it is confirmed, and one born inside a zone has been inside
since its first detection.

Times are the frames' monotonic times; the caller turns them into wall-clock times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .tracking import EndedTrack, TrackedObject

Point = tuple[float, float]
Box = tuple[float, float, float, float]
ANCHORS = ("bottom_center", "center", "top_center")
ZONE_EVENTS = ("enter", "exit")
DIRECTIONS = ("forward", "backward")


# -- geometry ---------------------------------------------------------------------------------------

def anchor_point(box: Box, anchor: str = "bottom_center") -> Point:
    x1, y1, x2, y2 = box
    y = {"bottom_center": y2, "center": (y1 + y2) / 2, "top_center": y1}[anchor]
    return ((x1 + x2) / 2, y)


def side_of_line(a: Point, b: Point, p: Point) -> float:
    """Signed distance of p from the line through a and b: positive on the right of a -> b as the
    picture shows it (image y grows downwards), negative on the left."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / math.hypot(dx, dy)


def crosses_segment(p: Point, q: Point, a: Point, b: Point) -> bool:
    """Whether the step p -> q goes from one side of the line a-b to the other between a and b
    (ends included). A step along the line does not cross it."""
    sp, sq = side_of_line(a, b, p), side_of_line(a, b, q)
    if sp * sq > 0 or sp == sq:
        return False
    k = sp / (sp - sq)
    cx, cy = p[0] + k * (q[0] - p[0]), p[1] + k * (q[1] - p[1])
    dx, dy = b[0] - a[0], b[1] - a[1]
    along = ((cx - a[0]) * dx + (cy - a[1]) * dy) / (dx * dx + dy * dy)
    return 0.0 <= along <= 1.0


def polygon_area(points: Sequence[Point]) -> float:
    """Shoelace area (positive either way round)."""
    xs = np.array([p[0] for p in points], np.float64)
    ys = np.array([p[1] for p in points], np.float64)
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def polygon_problem(points: Sequence[Point]) -> str | None:
    """Why these points are no usable zone, or None: fewer than 3, no area, or edges that cross."""
    if len(points) < 3:
        return "a zone needs at least 3 points [x, y]"
    if polygon_area(points) < 1.0:
        return "the points enclose no area (all on one line?)"
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing edge
            c, d = points[j], points[(j + 1) % n]
            if _proper_intersection(a, b, c, d):
                return f"edges {i + 1} and {j + 1} cross: list the points in order around the zone"
    return None


def _proper_intersection(a: Point, b: Point, c: Point, d: Point) -> bool:
    def orient(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    return o1 * o2 < 0 and o3 * o4 < 0


class Polygon:
    def __init__(self, points: Sequence[Point]):
        problem = polygon_problem(points)
        if problem:
            raise ValueError(problem)
        self.points = tuple((float(x), float(y)) for x, y in points)
        self._contour = np.array(self.points, np.float32).reshape(-1, 1, 2)

    def distance(self, p: Point) -> float:
        """Signed distance to the edge: positive inside, negative outside."""
        return cv2.pointPolygonTest(self._contour, (float(p[0]), float(p[1])), True)

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


# -- rules ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneSettings:
    name: str
    polygon: tuple[Point, ...]
    classes: frozenset[str] | None = None  # None: every class
    anchor: str = "bottom_center"
    hysteresis: float = 0.1  # share of the box height the point must be past the edge to change state
    events: frozenset[str] = frozenset(ZONE_EVENTS)  # which of enter / exit are reported (occupancy counts all)
    loiter_s: float | None = None  # None: no loitering alert

    def __post_init__(self):
        _check_rule(self.anchor, self.hysteresis, self.events, ZONE_EVENTS, "events")
        if self.loiter_s is not None and self.loiter_s <= 0:
            raise ValueError(f"zone {self.name}: loiter_s must be over 0")


@dataclass(frozen=True)
class TripwireSettings:
    name: str
    a: Point
    b: Point
    classes: frozenset[str] | None = None
    anchor: str = "bottom_center"
    hysteresis: float = 0.1
    directions: frozenset[str] = frozenset(DIRECTIONS)  # which crossings are reported (all are counted)

    def __post_init__(self):
        _check_rule(self.anchor, self.hysteresis, self.directions, DIRECTIONS, "directions")
        if math.hypot(self.b[0] - self.a[0], self.b[1] - self.a[1]) < 1.0:
            raise ValueError(f"tripwire {self.name}: needs two different points [[x, y], [x, y]]")


def _check_rule(anchor: str, hysteresis: float, chosen: Iterable[str], allowed: tuple[str, ...], key: str) -> None:
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, not {anchor!r}")
    if hysteresis < 0:
        raise ValueError("hysteresis must not be negative")
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise ValueError(f"{key}: {unknown[0]!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True, eq=False)
class Alert:
    kind: str  # zone_enter | zone_exit | loitering | line_cross
    name: str  # the zone's or the tripwire's
    track_id: int
    label: str
    box: Box  # the track's latest detection box
    point: Point  # its reference point
    t: float  # monotonic time: of the frame, or the last sighting for a zone_exit of a lost track
    first_seen: float  # when the track's first detection was
    score: float | None = None  # None when the track was not seen in this frame (lost)
    direction: str | None = None  # line_cross
    entered: float | None = None  # zone_exit and loitering: when the track entered the zone
    reason: str | None = None  # zone_exit: left | lost
    counts: Mapping = field(default_factory=dict)  # zone: occupancy per class after it; tripwire: crossings so far

    @property
    def dwell_s(self) -> float | None:
        return None if self.entered is None else self.t - self.entered


def _watched(tracks: Iterable[TrackedObject], settings: ZoneSettings | TripwireSettings):
    """The tracks of the classes a rule watches, with their reference points."""
    for track in tracks:
        if settings.classes is None or track.label in settings.classes:
            yield track, anchor_point(track.box, settings.anchor)


class _Presence:
    __slots__ = ("inside", "entered", "loitered", "label")

    def __init__(self, inside: bool, entered: float, label: str):
        self.inside, self.entered, self.loitered, self.label = inside, entered, False, label


class Zone:
    def __init__(self, settings: ZoneSettings):
        self.settings = settings
        self.polygon = Polygon(settings.polygon)
        self._presence: dict[int, _Presence] = {}
        self.counters: dict[str, dict[str, int]] = {"enter": {}, "exit": {}, "loitering": {}}

    @property
    def known(self) -> int:
        """Tracks this zone holds state for: live ones only (an ended track is forgotten)."""
        return len(self._presence)

    def occupancy(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for presence in list(self._presence.values()):  # list(): health reads it from another thread
            if presence.inside:
                counts[presence.label] = counts.get(presence.label, 0) + 1
        return counts

    def update(self, t: float, tracks: Iterable[TrackedObject], ended: Iterable[EndedTrack]) -> list[Alert]:
        s = self.settings
        alerts = []
        for track, point in _watched(tracks, s):
            distance = self.polygon.distance(point)
            margin = s.hysteresis * (track.box[3] - track.box[1])
            presence = self._presence.get(track.track_id)
            if presence is None:
                # First sighting of a confirmed track: it starts where it was born, so a track that
                # entered while still tentative enters now, and one born inside has been inside since.
                born = anchor_point(track.first_box or track.box, s.anchor)
                presence = self._presence[track.track_id] = _Presence(False, t, track.label)
                if self.polygon.distance(born) >= 0:
                    if distance > -margin:  # (else it was inside only while tentative: nothing to report)
                        alerts += self._enter(presence, track, point, t, track.first_seen)
                elif distance >= margin:
                    alerts += self._enter(presence, track, point, t, t)
            elif not presence.inside and distance >= margin:
                alerts += self._enter(presence, track, point, t, t)
            elif presence.inside and distance <= -margin:
                presence.inside = False
                alerts += self._alert("exit", "zone_exit", track.track_id, track.label, track.box, point, t,
                                      track.first_seen, track.score, entered=presence.entered, reason="left")
            if presence.inside and s.loiter_s is not None and not presence.loitered \
                    and t - presence.entered >= s.loiter_s:
                presence.loitered = True
                self._count("loitering", track.label)
                alerts.append(Alert("loitering", s.name, track.track_id, track.label, track.box, point, t,
                                    track.first_seen, track.score, entered=presence.entered,
                                    counts=self.occupancy()))
        for track in ended:
            presence = self._presence.pop(track.track_id, None)
            if presence is not None and presence.inside:
                point = anchor_point(track.box, s.anchor)
                alerts += self._alert("exit", "zone_exit", track.track_id, track.label, track.box, point,
                                      track.last_seen, track.first_seen, None, entered=presence.entered,
                                      reason="lost")
        return alerts

    def _enter(self, presence: _Presence, track: TrackedObject, point: Point, t: float, since: float) -> list[Alert]:
        presence.inside, presence.entered = True, since
        return self._alert("enter", "zone_enter", track.track_id, track.label, track.box, point, t,
                           track.first_seen, track.score)

    def _alert(self, event: str, kind: str, track_id: int, label: str, box: Box, point: Point, t: float,
               first_seen: float, score: float | None, **extra) -> list[Alert]:
        self._count(event, label)
        if event not in self.settings.events:
            return []
        return [Alert(kind, self.settings.name, track_id, label, box, point, t, first_seen, score,
                      counts=self.occupancy(), **extra)]

    def _count(self, event: str, label: str) -> None:
        self.counters[event][label] = self.counters[event].get(label, 0) + 1


class Tripwire:
    def __init__(self, settings: TripwireSettings):
        self.settings = settings
        self._side: dict[int, tuple[int, Point]] = {}  # track -> (side, latest point clearly on it)
        self.counters: dict[str, dict[str, int]] = {d: {} for d in DIRECTIONS}

    @property
    def known(self) -> int:
        """Tracks this tripwire holds a side for: live ones only."""
        return len(self._side)

    def update(self, t: float, tracks: Iterable[TrackedObject], ended: Iterable[EndedTrack]) -> list[Alert]:
        s = self.settings
        alerts = []
        for track, point in _watched(tracks, s):
            distance = side_of_line(s.a, s.b, point)
            if abs(distance) < s.hysteresis * (track.box[3] - track.box[1]):
                continue  # on the line, within the dead band: wait until it is clearly on one side
            side = 1 if distance > 0 else -1
            before = self._side.get(track.track_id)
            if before is None and track.first_box is not None:
                # first sighting: start from where the track was born, if that was clearly on a side
                born = anchor_point(track.first_box, s.anchor)
                born_distance = side_of_line(s.a, s.b, born)
                if abs(born_distance) >= s.hysteresis * (track.first_box[3] - track.first_box[1]):
                    before = (1 if born_distance > 0 else -1, born)
            self._side[track.track_id] = (side, point)
            if before is None or before[0] == side or not crosses_segment(before[1], point, s.a, s.b):
                continue
            direction = "forward" if side > 0 else "backward"
            counts = self.counters[direction]
            counts[track.label] = counts.get(track.label, 0) + 1
            if direction in s.directions:
                alerts.append(Alert("line_cross", s.name, track.track_id, track.label, track.box, point, t,
                                    track.first_seen, track.score, direction=direction,
                                    counts={d: dict(c) for d, c in self.counters.items()}))
        for track in ended:
            self._side.pop(track.track_id, None)
        return alerts
