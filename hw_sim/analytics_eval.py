"""How well the stream line's analytics do on rendered street clips with the real detector.

Shared by tests/test_surveillance_analytics.py (which asserts floors) and hw_sim/bench_tracking.py
(which prints the figures for the README). Each measure runs agent.postprocess.analytics on the
detector's findings for every frame of a clip and compares with hw_sim.street_tracks' truth:

- tracking: CLEAR-MOT and IDF1 (street_tracks.mot_metrics);
- crossings: a vertical and a horizontal tripwire through the middle of the picture;
- zone: enter and exit of a centre rectangle;
- loitering: a zone drawn around each loiterer's spot (loiter_s 12 s) that passers-by walk through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.events import Detection
from agent.infer.engine import Detector, Model
from agent.postprocess.analytics import CameraAnalytics
from agent.postprocess.tracking import TrackerSettings
from agent.postprocess.zones import TripwireSettings, ZoneSettings

from . import street_tracks as st

DETECTOR = Path(__file__).resolve().parents[1] / "models" / "surveillance-detector" / "int8"
FPS = 5.0  # the stream line's default max_fps
SECONDS = 40.0
TRIPWIRES = {"vertical": ((320.0, 0.0), (320.0, 480.0)), "horizontal": ((0.0, 300.0), (640.0, 300.0))}
ZONE = ((160.0, 200.0), (480.0, 200.0), (480.0, 480.0), (160.0, 480.0))
LOITER_S = 12.0


@dataclass
class Tally:
    """Found events against true ones, summed over clips."""

    what: str
    truth: int = 0
    found: int = 0
    matched: int = 0

    def add(self, expected: list, found: list, tolerance_s: float) -> tuple[int, list, list]:
        matched, extra, missed = st.match_events(found, expected, tolerance_s)
        self.truth, self.found, self.matched = self.truth + len(expected), self.found + len(found), self.matched + matched
        return matched, extra, missed

    @property
    def recall(self) -> float:
        return self.matched / max(self.truth, 1)

    @property
    def precision(self) -> float:
        return self.matched / max(self.found, 1)

    def summary(self) -> str:
        return (f"{self.what}: {self.truth} true events, {self.found} found, recall {self.recall:.3f}, "
                f"precision {self.precision:.3f}")


@dataclass
class TrackingFigures:
    scores: list[st.MotScore]

    @property
    def mota(self) -> float:
        return sum(s.mota for s in self.scores) / len(self.scores)

    @property
    def idf1(self) -> float:
        return sum(s.idf1 for s in self.scores) / len(self.scores)

    def per_track(self, count: str) -> float:
        return sum(getattr(s, count) for s in self.scores) / sum(s.gt_tracks for s in self.scores)

    def summary(self) -> str:
        return (f"mean MOTA {self.mota:.3f}, mean IDF1 {self.idf1:.3f}, id switches per GT track "
                f"{self.per_track('id_switches'):.2f}, fragmentations per GT track {self.per_track('fragmentations'):.2f}")


@dataclass
class LoiteringFigures:
    loiterers: int = 0
    flagged: int = 0
    wrong: int = 0  # loitering alerts on any other true track, or on none
    passers: int = 0  # passers-by who walked through a loiterer's zone
    delays: list[float] = field(default_factory=list)  # alert time - loiter_s, per flagged loiterer

    def summary(self) -> str:
        delay = f", alert {max(self.delays):.1f} s after loiter_s at worst" if self.delays else ""
        return (f"loitering: {self.flagged} of {self.loiterers} loiterers flagged, {self.wrong} alerts on anything "
                f"else, {self.passers} passers-by walked through the loiterers' zones{delay}")


class Evaluation:
    def __init__(self, log: Callable[[str], None] = print, detector: Detector | None = None):
        self._log = log
        self._detector = detector
        self._runs: dict = {}

    def run(self, seed: int, seconds: float = SECONDS, fps: float = FPS):
        """A clip and the detector's findings on every frame, down to the tracker's low score (cached)."""
        key = (seed, seconds, fps)
        if key not in self._runs:
            if self._detector is None:
                self._detector = Detector(Model(DETECTOR))
            scenes = st.clip(seed, seconds, fps, persons=4, vehicles=3, loiterers=2)
            floor = TrackerSettings().low_score
            self._runs[key] = (scenes, [self._detector.detect(scene.image, floor) for scene in scenes])
        return self._runs[key]

    @staticmethod
    def analyse(scenes, detections, zones=(), tripwires=()):
        analytics = CameraAnalytics("cam", TrackerSettings(), zones, tripwires)
        height, width = scenes[0].image.shape[:2]
        alerts, tracked = [], []
        for scene, found in zip(scenes, detections):
            result = analytics.update(scene.t, found, (width, height))
            alerts += result.alerts
            tracked.append([(tid, d.label, d.box) for tid, d in zip(result.track_ids, found) if tid is not None])
        return alerts, tracked, analytics

    def tracking(self, seeds: Sequence[int], thin: int | None = None) -> TrackingFigures:
        """thin: 10 fps clips with random gaps of 1..thin frames instead of steady 5 fps ones."""
        scores = []
        for seed in seeds:
            scenes, detections = self.run(seed) if thin is None else self.run(seed, 30.0, 10.0)
            if thin is not None:
                kept = st.uneven(range(len(scenes)), seed, 1, thin)
                scenes, detections = [scenes[k] for k in kept], [detections[k] for k in kept]
            _, tracked, _ = self.analyse(scenes, detections)
            score = st.mot_metrics([st.truth(s) for s in scenes], tracked)
            self._log(f"seed {seed}: {score.summary()}")
            scores.append(score)
        figures = TrackingFigures(scores)
        self._log(figures.summary())
        return figures

    def crossings(self, seeds: Sequence[int]) -> Tally:
        tally = Tally("tripwire crossings")
        for seed in seeds:
            scenes, detections = self.run(seed)
            wires = [TripwireSettings(name, a, b) for name, (a, b) in TRIPWIRES.items()]
            alerts, _, analytics = self.analyse(scenes, detections, tripwires=wires)
            for wire, (a, b) in zip(analytics.tripwires, TRIPWIRES.values()):
                found = [(x.t, x.label, x.direction, x.box) for x in alerts
                         if x.kind == "line_cross" and x.name == wire.settings.name]
                expected = st.line_crossings(scenes, a, b)
                matched, extra, missed = tally.add(expected, found, tolerance_s=1.0)
                self._log(f"seed {seed} {wire.settings.name}: truth {len(expected)} crossings, counted "
                          f"{ {d: sum(c.values()) for d, c in wire.counters.items()} }, matched {matched}, "
                          f"missed {[(round(e.t, 1), e.kind, e.what) for e in missed]}, "
                          f"extra {[(round(f[0], 1), f[1], f[2]) for f in extra]}")
        self._log(tally.summary())
        return tally

    def zone(self, seeds: Sequence[int]) -> Tally:
        tally = Tally("zone enter/exit")
        for seed in seeds:
            scenes, detections = self.run(seed)
            alerts, _, analytics = self.analyse(scenes, detections, zones=[ZoneSettings("centre", ZONE)])
            found = [(x.t, x.label, x.kind.removeprefix("zone_"), x.box) for x in alerts if x.kind.startswith("zone_")]
            matched, extra, missed = tally.add(st.zone_events(scenes, ZONE), found, tolerance_s=1.5)
            self._log(f"seed {seed}: found {len(found)} enter/exit, matched {matched}, extra {len(extra)}, "
                      f"missed {len(missed)}; occupancy at the end {analytics.zones[0].occupancy()}")
        self._log(tally.summary())
        return tally

    def loitering(self, seeds: Sequence[int]) -> LoiteringFigures:
        figures = LoiteringFigures()
        for seed in seeds:
            scenes, detections = self.run(seed)
            spots = sorted(st.loiterers(scenes))
            zones = [ZoneSettings(f"spot{tid}", tuple(st.hangout(scenes, tid)), classes=frozenset({"person"}),
                                  loiter_s=LOITER_S) for tid in spots]
            alerts, _, _ = self.analyse(scenes, detections, zones=zones)
            at = {scene.t: scene for scene in scenes}
            found: dict[str, list] = {}
            for a in alerts:
                if a.kind == "loitering":
                    found.setdefault(a.name, []).append((round(a.t, 1), st.owner(at[a.t], a.label, a.box)))
            walked_through = set()
            for zone in zones:
                walked_through |= {e.track_id for e in st.zone_events(scenes, zone.polygon)
                                   if e.kind == "person" and e.what == "enter" and e.track_id not in spots}
            self._log(f"seed {seed}: loiterers {spots}, passers-by through their zones {sorted(walked_through)}, "
                      f"loitering alerts (time, true track) {found}")
            for tid in spots:
                times = [t for t, owner in found.get(f"spot{tid}", []) if owner == tid]
                if times:
                    figures.flagged += 1
                    figures.delays.append(min(times) - LOITER_S)
            figures.loiterers += len(spots)
            figures.wrong += sum(1 for got in found.values() for _, owner in got if owner not in spots)
            figures.passers += len(walked_through)
        self._log(figures.summary())
        return figures


class SyntheticCrowd:
    """N boxes crossing the picture at constant speed with detector-like faults, replaced when they
    leave it: the benchmark's load, and the soak of the analytics' bounded state. Each step is
    one frame's detections: box jitter, 10% missed, a weak duplicate on every fifth object."""

    def __init__(self, n: int, width: int = 640, height: int = 480, seed: int = 0):
        self.width, self.height = width, height
        self.rng = np.random.default_rng(seed)
        self.objects = [self._spawn() for _ in range(n)]

    def _spawn(self) -> list:
        rng = self.rng
        vehicle = rng.random() < 0.3
        h = rng.uniform(40, 120) if vehicle else rng.uniform(25, 110)
        w = h * (rng.uniform(1.4, 2.2) if vehicle else rng.uniform(0.3, 0.45))
        speed = rng.uniform(40, 160) if vehicle else rng.uniform(10, 50)
        angle = rng.uniform(0, 2 * np.pi)
        return [rng.uniform(0, self.width - w), rng.uniform(0, self.height - h), w, h,
                speed * np.cos(angle), speed * np.sin(angle), int(vehicle)]

    def step(self, dt: float) -> list[Detection]:
        rng = self.rng
        found = []
        for k, o in enumerate(self.objects):
            o[0] += o[4] * dt
            o[1] += o[5] * dt
            if not (-o[2] < o[0] < self.width and -o[3] < o[1] < self.height):
                self.objects[k] = o = self._spawn()
            if rng.random() < 0.1:
                continue  # missed by the detector
            jitter = rng.normal(0, 0.03 * o[3], 4)
            box = (o[0] + jitter[0], o[1] + jitter[1], o[0] + o[2] + jitter[2], o[1] + o[3] + jitter[3])
            label = ("person", "vehicle")[o[6]]
            found.append(Detection(o[6], label, float(rng.uniform(0.55, 0.95)), box))
            if k % 5 == 0:
                found.append(Detection(o[6], label, float(rng.uniform(0.1, 0.3)),
                                       tuple(v + rng.normal(0, 0.2 * o[3]) for v in box)))
        return found
