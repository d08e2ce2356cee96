"""Multi-object tracking per camera: ByteTrack-style association over the detector's boxes.

  detections of one frame -> predict every track to the frame's time (constant velocity, Kalman)
    -> 1. high-score detections  <-> confirmed and lost tracks     (IoU with the predicted box)
    -> 2. low-score detections   <-> confirmed tracks still unmatched (a weak detection keeps a
                                      partly hidden object's track alive instead of starting one)
    -> 3. high-score detections left <-> tentative tracks
    -> high-score detections still left start tentative tracks; a tentative track is confirmed
       (gets reported) after `min_hits` matches and dropped at its first miss; a confirmed track
       dies after `max_misses` inferred frames in a row without a match, or `max_lost_s` unseen.

Each stage is one `scipy.optimize.linear_sum_assignment` on 1 - IoU; a track only takes
detections of its own class. The IoU is of the boxes grown by `buffer` of their size (C-BIoU),
and more for a track unseen for a while, so a fast mover at a low frame rate, or one whose
prediction drifted while it was hidden, is still found. Ids are per camera, from 1, never reused
while the tracker lives.

Time comes from the frames' timestamps, never from frame counts: the stream line's frames
arrive unevenly (motion gating, the rate cap, frames dropped behind a busy detector), so the
motion model predicts over the real interval and the process noise grows with it. Misses, on
the other hand, count inferred frames: a frame that was never inferred is no evidence that an
object left, so a still scene looked at every few seconds keeps its tracks, while `max_lost_s`
still ends the tracks of a camera that went dark.

Why not a library: supervision's ByteTrack (the well-kept one) counts time in frames at a
fixed frame rate, so its predictions and track buffer go wrong at uneven rates; it matches
without regard to class; and it pulls in matplotlib, PyAV, Pillow and tqdm beside our
opencv-python-headless. boxmot needs torch. This file is the small part of ByteTrack the line
needs (no re-identification features), with time-based motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..events import Detection

# Kalman filter on (cx, cy, aspect w/h, h) and their rates, as SORT and ByteTrack do. Noise
# scales with the box height, so a far (small) object and a near (large) one are treated alike.
_MEASURE_STD = 0.05  # cx, cy, h: share of the box height
_MEASURE_STD_ASPECT = 0.1
_PROCESS_STD_POS = 0.1  # share of the height per sqrt(second)
_PROCESS_STD_VEL = 0.3  # share of the height per second, per sqrt(second): how fast speed may change
_PROCESS_STD_ASPECT = 0.05
_INIT_STD_POS = 0.1
_INIT_STD_VEL = 2.0  # a new track may move up to a few heights a second (a car at 5 fps)


_UNMATCHABLE = 1e6


class TrackState(str, Enum):
    TENTATIVE = "tentative"  # not enough hits yet: not reported
    CONFIRMED = "confirmed"  # matched in its latest frame
    LOST = "lost"  # confirmed, but unmatched lately: still predicted, not reported


@dataclass(frozen=True)
class TrackerSettings:
    high_score: float = 0.5  # detections at or over this are matched first and may start tracks
    low_score: float = 0.1  # from here to high_score a detection only keeps a confirmed track going
    birth_score: float | None = None  # a new track needs a detection at least this good; None: high_score
    match_iou: float = 0.2  # stage 1: least IoU of a detection with a track's predicted box
    low_match_iou: float = 0.3  # stage 2 (weak detections need a closer fit)
    tentative_match_iou: float = 0.3  # stage 3
    min_hits: int = 3  # birth: matches before a track is confirmed and reported
    max_misses: int = 15  # death: inferred frames in a row without a match
    max_lost_s: float = 3.0  # death: this long unseen, however few frames came
    buffer: float = 0.1  # boxes grow by this share of their size on each side before the IoU (C-BIoU)
    lost_buffer_per_s: float = 0.3  # and by this much more per second a track has been unseen (up to 1 s)
    max_tracks: int = 256  # per camera; more births are refused (counted): memory stays bounded

    def __post_init__(self):
        if not 0 < self.low_score <= self.high_score < 1:
            raise ValueError(f"need 0 < low_score ({self.low_score}) <= high_score ({self.high_score}) < 1")
        if self.min_hits < 1 or self.max_misses < 1 or self.max_lost_s <= 0 or self.max_tracks < 1:
            raise ValueError("min_hits, max_misses and max_tracks must be at least 1, max_lost_s over 0")

    @property
    def new_track_score(self) -> float:
        return self.high_score if self.birth_score is None else self.birth_score


@dataclass(frozen=True)
class TrackedObject:
    """A confirmed track matched in this frame: its detection's box and score."""

    track_id: int
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # the detection's box, source-frame pixels
    velocity: tuple[float, float]  # box centre, pixels per second (the filter's estimate)
    first_seen: float  # monotonic time of its first detection
    hits: int
    detection: int  # index of its detection in the list passed to update()
    # Its first detection's box: where it was born, before it was confirmed. Rules that meet a
    # track for the first time start from there, so what it did while tentative still counts.
    first_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class EndedTrack:
    track_id: int
    label: str
    box: tuple[float, float, float, float]  # the last detection's box
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class TrackerUpdate:
    tracks: tuple[TrackedObject, ...]  # confirmed tracks matched in this frame
    ended: tuple[EndedTrack, ...]  # confirmed tracks that died in this update
    track_ids: tuple[int | None, ...]  # per detection passed in: its confirmed track, or None
    coasting: tuple[int, ...]  # confirmed tracks alive but unmatched in this frame (hidden, missed)


class _Track:
    __slots__ = ("track_id", "label", "class_id", "state", "mean", "cov", "t", "hits", "misses",
                 "first_seen", "last_seen", "box", "score", "first_box")

    def __init__(self, track_id: int, detection: Detection, t: float):
        self.track_id = track_id
        self.label = detection.label
        self.class_id = detection.class_id
        self.state = TrackState.TENTATIVE
        z = _measurement(np.array([detection.box], np.float64))[0]
        self.mean = np.concatenate([z, np.zeros(4)])
        h = z[3]
        std = np.array([_INIT_STD_POS * h, _INIT_STD_POS * h, _MEASURE_STD_ASPECT, _INIT_STD_POS * h,
                        _INIT_STD_VEL * h, _INIT_STD_VEL * h, _PROCESS_STD_ASPECT, _INIT_STD_VEL * h])
        self.cov = np.diag(std**2)
        self.t = t
        self.hits = 1
        self.misses = 0
        self.first_seen = self.last_seen = t
        self.box = self.first_box = detection.box
        self.score = detection.score


class Tracker:
    """One camera's tracks. Not thread-safe: one tracker per camera, fed in time order."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()):
        self.settings = settings
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._t: float | None = None
        self.counters = dict.fromkeys(("frames", "out_of_order", "born", "confirmed", "ended", "births_refused"), 0)

    @property
    def active(self) -> int:
        """Confirmed tracks alive (matched lately or coasting)."""
        return sum(1 for track in self._tracks if track.state is not TrackState.TENTATIVE)

    @property
    def tentative(self) -> int:
        return sum(1 for track in self._tracks if track.state is TrackState.TENTATIVE)

    def update(self, t: float, detections: list[Detection]) -> TrackerUpdate:
        """Feed one inferred frame (monotonic time t, all its detections, weak ones included).

        A frame older than the last one fed is not used (counted in `out_of_order`): its
        detections get no track ids."""
        settings = self.settings
        if self._t is not None and t < self._t:
            self.counters["out_of_order"] += 1
            return TrackerUpdate((), (), (None,) * len(detections), ())
        self._t = t
        self.counters["frames"] += 1
        ended = self._expire(t)
        self._predict(t)
        scores = np.array([d.score for d in detections], np.float64)
        high = [i for i in range(len(detections)) if scores[i] >= settings.high_score]
        low = [i for i in range(len(detections)) if settings.low_score <= scores[i] < settings.high_score]
        established = [k for k, tr in enumerate(self._tracks) if tr.state is not TrackState.TENTATIVE]
        tentative = [k for k, tr in enumerate(self._tracks) if tr.state is TrackState.TENTATIVE]

        matches, left_tracks, left_high = self._associate(established, high, detections, settings.match_iou)
        confirmed_left = [k for k in left_tracks if self._tracks[k].state is TrackState.CONFIRMED]
        low_matches, _, _ = self._associate(confirmed_left, low, detections, settings.low_match_iou)
        tentative_matches, _, left_high = self._associate(tentative, left_high, detections,
                                                          settings.tentative_match_iou)
        matched = matches + low_matches + tentative_matches
        self._correct(matched, detections, t)

        detection_of = {id(self._tracks[k]): i for k, i in matched}
        keep: list[_Track] = []
        for track in self._tracks:
            if id(track) in detection_of:
                keep.append(track)
                continue
            if track.state is TrackState.TENTATIVE:
                continue  # a tentative track ends at its first miss
            track.misses += 1
            track.state = TrackState.LOST
            track.mean[7] = 0.0  # a hidden box stops growing or shrinking (ByteTrack does the same)
            if track.misses >= settings.max_misses:
                ended.append(self._ended(track))
            else:
                keep.append(track)
        self._tracks = keep
        for i in left_high:
            if detections[i].score < settings.new_track_score:
                continue
            if len(self._tracks) >= settings.max_tracks:
                self.counters["births_refused"] += 1
                continue
            track = _Track(self._next_id, detections[i], t)
            self._next_id += 1
            self._tracks.append(track)
            self.counters["born"] += 1
            detection_of[id(track)] = i
            if settings.min_hits == 1:
                self._confirm(track)

        track_ids: list[int | None] = [None] * len(detections)
        reported = []
        for track in self._tracks:
            index = detection_of.get(id(track))
            if index is None or track.state is not TrackState.CONFIRMED:
                continue
            track_ids[index] = track.track_id
            reported.append(TrackedObject(track.track_id, track.label, track.class_id, track.score, track.box,
                                          (float(track.mean[4]), float(track.mean[5])), track.first_seen,
                                          track.hits, index, track.first_box))
        coasting = tuple(tr.track_id for tr in self._tracks if tr.state is TrackState.LOST)
        return TrackerUpdate(tuple(reported), tuple(ended), tuple(track_ids), coasting)

    # -- internals -------------------------------------------------------------------------
    def _expire(self, t: float) -> list[EndedTrack]:
        ended, keep = [], []
        for track in self._tracks:
            if t - track.last_seen > self.settings.max_lost_s:
                if track.state is not TrackState.TENTATIVE:
                    ended.append(self._ended(track))
            else:
                keep.append(track)
        self._tracks = keep
        return ended

    def _ended(self, track: _Track) -> EndedTrack:
        self.counters["ended"] += 1
        return EndedTrack(track.track_id, track.label, track.box, track.first_seen, track.last_seen)

    def _confirm(self, track: _Track) -> None:
        track.state = TrackState.CONFIRMED
        self.counters["confirmed"] += 1

    def _predict(self, t: float) -> None:
        """Every track's state moved to time t: x += v dt, P = F P F' + Q dt."""
        if not self._tracks:
            return
        dt = np.array([t - tr.t for tr in self._tracks])
        mean = np.stack([tr.mean for tr in self._tracks])
        cov = np.stack([tr.cov for tr in self._tracks])
        n = len(self._tracks)
        transition = np.tile(np.eye(8), (n, 1, 1))
        transition[:, range(4), range(4, 8)] = dt[:, None]
        mean[:, :4] += mean[:, 4:] * dt[:, None]
        h = np.maximum(mean[:, 3], 1.0)
        std = np.stack([_PROCESS_STD_POS * h, _PROCESS_STD_POS * h, np.full(n, _PROCESS_STD_ASPECT),
                        _PROCESS_STD_POS * h, _PROCESS_STD_VEL * h, _PROCESS_STD_VEL * h,
                        np.full(n, _PROCESS_STD_ASPECT), _PROCESS_STD_VEL * h], axis=1)
        noise = np.zeros((n, 8, 8))
        noise[:, range(8), range(8)] = std**2 * dt[:, None]
        cov = transition @ cov @ transition.transpose(0, 2, 1) + noise
        for k, track in enumerate(self._tracks):
            track.mean, track.cov, track.t = mean[k], cov[k], t

    def _associate(self, track_indices: list[int], det_indices: list[int], detections: list[Detection],
                   min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Optimal one-to-one matching of tracks and detections of the same class by IoU with the
        predicted box. Returns (matches (track, detection), tracks left, detections left)."""
        if not track_indices or not det_indices:
            return [], list(track_indices), list(det_indices)
        tracks = [self._tracks[k] for k in track_indices]
        predicted = _boxes(np.stack([tr.mean[:4] for tr in tracks]))
        boxes = np.array([detections[i].box for i in det_indices], np.float64)
        unseen = np.array([tr.t - tr.last_seen for tr in tracks])
        buffers = self.settings.buffer + self.settings.lost_buffer_per_s * np.minimum(unseen, 1.0)
        iou = buffered_iou(predicted, boxes, buffers)
        same_class = (np.array([self._tracks[k].class_id for k in track_indices])[:, None]
                      == np.array([detections[i].class_id for i in det_indices])[None, :])
        iou = np.where(same_class, iou, 0.0)
        # Pairs under min_iou cannot be matched at all: as costly as leaving both unmatched, so
        # the assignment never gives up a good pair to make a poor one (lapjv's cost_limit).
        rows, cols = linear_sum_assignment(np.where(iou >= min_iou, 1.0 - iou, _UNMATCHABLE))
        matches, used_tracks, used_dets = [], set(), set()
        for r, c in zip(rows, cols):
            if iou[r, c] >= min_iou:
                matches.append((track_indices[r], det_indices[c]))
                used_tracks.add(r)
                used_dets.add(c)
        return (matches, [k for r, k in enumerate(track_indices) if r not in used_tracks],
                [i for c, i in enumerate(det_indices) if c not in used_dets])

    def _correct(self, matched: list[tuple[int, int]], detections: list[Detection], t: float) -> None:
        """Kalman update of the matched tracks with their detections, all at once."""
        if not matched:
            return
        tracks = [self._tracks[k] for k, _ in matched]
        z = _measurement(np.array([detections[i].box for _, i in matched], np.float64))
        mean = np.stack([tr.mean for tr in tracks])
        cov = np.stack([tr.cov for tr in tracks])
        h = np.maximum(mean[:, 3], 1.0)
        r = np.stack([_MEASURE_STD * h, _MEASURE_STD * h, np.full(len(h), _MEASURE_STD_ASPECT), _MEASURE_STD * h], 1)
        innovation_cov = cov[:, :4, :4] + np.einsum("ni,ij->nij", r**2, np.eye(4))
        gain = np.linalg.solve(innovation_cov, cov[:, :4, :]).transpose(0, 2, 1)  # P H' S^-1 (S symmetric)
        mean = mean + np.einsum("nij,nj->ni", gain, z - mean[:, :4])
        cov = cov - gain @ innovation_cov @ gain.transpose(0, 2, 1)
        for k, (track, (_, i)) in enumerate(zip(tracks, matched)):
            track.mean, track.cov = mean[k], cov[k]
            track.hits += 1
            track.misses = 0
            track.last_seen = t
            track.box = detections[i].box
            track.score = detections[i].score
            if track.state is TrackState.LOST:
                track.state = TrackState.CONFIRMED
            elif track.state is TrackState.TENTATIVE and track.hits >= self.settings.min_hits:
                self._confirm(track)


def _measurement(boxes: np.ndarray) -> np.ndarray:
    """xyxy boxes -> (cx, cy, w/h, h)."""
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, w / h, h], axis=1)


def _boxes(state: np.ndarray) -> np.ndarray:
    """(cx, cy, w/h, h) -> xyxy boxes."""
    h = np.maximum(state[:, 3], 1e-3)
    w = np.maximum(state[:, 2], 1e-3) * h
    return np.stack([state[:, 0] - w / 2, state[:, 1] - h / 2, state[:, 0] + w / 2, state[:, 1] + h / 2], axis=1)


def buffered_iou(tracks: np.ndarray, detections: np.ndarray, buffers: np.ndarray) -> np.ndarray:
    """IoU of track and detection boxes each grown by buffers[track] of its own width and height on
    every side (C-BIoU): a fast or irregular mover whose prediction is off by a little still overlaps."""
    b = buffers[:, None, None]
    def grown(boxes):
        w = (boxes[..., 2] - boxes[..., 0])[..., None]
        h = (boxes[..., 3] - boxes[..., 1])[..., None]
        return boxes + b * np.concatenate([-w, -h, w, h], axis=-1)
    t, d = grown(tracks[:, None, :]), grown(detections[None, :, :])
    ix = np.clip(np.minimum(t[..., 2], d[..., 2]) - np.maximum(t[..., 0], d[..., 0]), 0, None)
    iy = np.clip(np.minimum(t[..., 3], d[..., 3]) - np.maximum(t[..., 1], d[..., 1]), 0, None)
    inter = ix * iy
    union = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1]) + (d[..., 2] - d[..., 0]) * (d[..., 3] - d[..., 1]) - inter
    return inter / np.maximum(union, 1e-9)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: [len(a), len(b)]."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
