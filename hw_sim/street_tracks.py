"""Ground truth for tracking and surveillance analytics, built on hw_sim.street_scene sequences.

The renderer's sequences carry a ground-truth `track_id`, a tight box and a visibility for every
object; this module turns them into what the analytics are judged against:

- `clip`: a sequence rendered once, with its frame times; `uneven` thins it to irregular gaps
  (what motion gating and a busy detector do to a stream line's frames).
- `mot_metrics`: CLEAR-MOT (MOTA, id switches, fragmentations) and IDF1 of a tracker's output
  against the ground truth, with small or mostly hidden objects as "don't care" (the detector is
  not asked to find objects under 12 px or 20% visible; MOT benchmarks treat such objects alike).
  Written here rather than taken from py-motmetrics, which brings pandas for a few counters.
- `loiterers`: ground-truth persons who stay around one spot for the whole clip (the renderer's
  loiterers wander within 1-2.5 m of a spot; passers-by walk through).
- `line_crossings`, `zone_events`: when each ground-truth track's reference point (the bottom
  centre of its box) crosses a directed segment or enters and leaves a polygon.

Nothing here is used by the agent; the geometry is written out plainly on purpose, so the
ground truth does not lean on the code it judges (agent.postprocess.zones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .street_scene import StreetRenderer, StreetScene


@dataclass(frozen=True)
class TruthObject:
    track_id: int
    kind: str
    box: tuple[float, float, float, float]
    visibility: float


def clip(seed: int, seconds: float, fps: float = 5.0, persons: int = 4, vehicles: int = 3,
         loiterers: int = 0) -> list[StreetScene]:
    """A rendered street sequence; scene.t is each frame's time in seconds from the start."""
    return list(StreetRenderer(seed=seed).sequence(round(seconds * fps), fps, persons, vehicles, loiterers))


def uneven(scenes: Sequence[StreetScene], seed: int, min_gap: int = 1, max_gap: int = 4) -> list[StreetScene]:
    """Keep frames with random gaps of min_gap..max_gap frames between them (their own times stay)."""
    rng = np.random.default_rng(seed)
    kept, k = [], 0
    while k < len(scenes):
        kept.append(scenes[k])
        k += int(rng.integers(min_gap, max_gap + 1))
    return kept


def truth(scene: StreetScene) -> list[TruthObject]:
    return [TruthObject(o.track_id, o.kind, tuple(float(v) for v in o.box), o.visibility) for o in scene.objects]


def foot(box) -> tuple[float, float]:
    """The bottom centre of a box: where the object stands."""
    return ((box[0] + box[2]) / 2.0, float(box[3]))


# -- tracking metrics ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MotScore:
    gt: int  # ground-truth boxes that count
    matches: int
    false_negatives: int
    false_positives: int
    id_switches: int
    fragmentations: int
    mota: float
    idf1: float
    gt_tracks: int
    mostly_tracked: int  # tracks matched in at least 80% of their frames
    mostly_lost: int  # under 20%
    pred_tracks: int

    def summary(self) -> str:
        per = max(self.gt_tracks, 1)
        return (f"MOTA {self.mota:.3f}  IDF1 {self.idf1:.3f}  recall {self.matches / max(self.gt, 1):.3f}  "
                f"FP {self.false_positives}  FN {self.false_negatives}  ID switches {self.id_switches} "
                f"({self.id_switches / per:.2f} per GT track)  fragmentations {self.fragmentations} "
                f"({self.fragmentations / per:.2f} per GT track)  GT tracks {self.gt_tracks} "
                f"(mostly tracked {self.mostly_tracked}, mostly lost {self.mostly_lost})  tracker ids {self.pred_tracks}")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    return inter / np.maximum(union - inter, 1e-9)


def mot_metrics(truth_frames: Sequence[Sequence[TruthObject]],
                predicted_frames: Sequence[Sequence[tuple[int, str, tuple]]],
                iou: float = 0.5, min_height: float = 20.0, min_visibility: float = 0.4) -> MotScore:
    """truth_frames[k]: the ground truth of frame k; predicted_frames[k]: (track id, label, box) the
    tracker reported for it. A prediction counts only on a ground-truth object of its own kind."""
    gt_total = matches = fn = fp = switches = frags = 0
    last_match: dict[int, int] = {}  # gt id -> pred id it was last matched to
    tracked_before: dict[int, bool] = {}
    frames_of: dict[int, int] = {}
    matched_of: dict[int, int] = {}
    pair_hits: dict[tuple[int, int], int] = {}
    pred_count: dict[int, int] = {}
    for gts, preds in zip(truth_frames, predicted_frames):
        care = [g for g in gts if g.box[3] - g.box[1] >= min_height and g.visibility >= min_visibility]
        dont = [g for g in gts if g not in care]
        gb = np.array([g.box for g in care], np.float64).reshape(-1, 4)
        pb = np.array([p[2] for p in preds], np.float64).reshape(-1, 4)
        overlap = _iou(gb, pb)
        same = np.array([[g.kind == p[1] for p in preds] for g in care], bool).reshape(len(care), len(preds))
        overlap = np.where(same, overlap, 0.0)
        for gi, g in enumerate(care):
            for pi, p in enumerate(preds):
                if overlap[gi, pi] >= iou:
                    pair_hits[(g.track_id, p[0])] = pair_hits.get((g.track_id, p[0]), 0) + 1
        # CLEAR-MOT: keep last frame's correspondences that still overlap, then assign the rest
        pairs: dict[int, int] = {}
        for gi, g in enumerate(care):
            previous = last_match.get(g.track_id)
            for pi, p in enumerate(preds):
                if p[0] == previous and overlap[gi, pi] >= iou and pi not in pairs.values():
                    pairs[gi] = pi
        free_g = [gi for gi in range(len(care)) if gi not in pairs]
        free_p = [pi for pi in range(len(preds)) if pi not in pairs.values()]
        if free_g and free_p:
            sub = overlap[np.ix_(free_g, free_p)]
            rows, cols = linear_sum_assignment(-sub)
            for r, c in zip(rows, cols):
                if sub[r, c] >= iou:
                    pairs[free_g[r]] = free_p[c]
        for gi, pi in pairs.items():
            gid, pid = care[gi].track_id, preds[pi][0]
            if gid in last_match and last_match[gid] != pid:
                switches += 1
            last_match[gid] = pid
        # predictions on don't-care objects are neither hits nor false positives
        unmatched_p = [pi for pi in range(len(preds)) if pi not in pairs.values()]
        if dont and unmatched_p:
            db = np.array([g.box for g in dont], np.float64)
            ov = _iou(pb[unmatched_p], db)
            unmatched_p = [pi for pi, row in zip(unmatched_p, ov) if row.max() < iou]
        gt_total += len(care)
        matches += len(pairs)
        fn += len(care) - len(pairs)
        fp += len(unmatched_p)
        for gi, g in enumerate(care):
            hit = gi in pairs
            frames_of[g.track_id] = frames_of.get(g.track_id, 0) + 1
            matched_of[g.track_id] = matched_of.get(g.track_id, 0) + hit
            if hit and tracked_before.get(g.track_id) is False:
                frags += 1
            if hit or g.track_id in tracked_before:
                tracked_before[g.track_id] = hit
        for p in preds:
            pred_count[p[0]] = pred_count.get(p[0], 0) + 1
    # IDF1: one-to-one identities between ground-truth and tracker ids, chosen to agree most often
    gids, pids = sorted(frames_of), sorted(pred_count)
    idtp = 0
    if gids and pids:
        hits = np.zeros((len(gids), len(pids)))
        gpos, ppos = {g: i for i, g in enumerate(gids)}, {p: i for i, p in enumerate(pids)}
        for (g, p), n in pair_hits.items():
            if g in gpos:
                hits[gpos[g], ppos[p]] = n
        rows, cols = linear_sum_assignment(-hits)
        idtp = int(hits[rows, cols].sum())
    pred_total = sum(pred_count.values())
    idf1 = 2 * idtp / max(gt_total + pred_total, 1)
    mota = 1.0 - (fn + fp + switches) / max(gt_total, 1)
    shares = [matched_of[g] / frames_of[g] for g in gids]
    return MotScore(gt_total, matches, fn, fp, switches, frags, mota, idf1, len(gids),
                    sum(s >= 0.8 for s in shares), sum(s < 0.2 for s in shares), len(pids))


# -- behaviour and events in the ground truth ------------------------------------------------------

def tracks_of(scenes: Sequence[StreetScene]) -> dict[int, list[tuple[float, TruthObject]]]:
    out: dict[int, list[tuple[float, TruthObject]]] = {}
    for scene in scenes:
        for g in truth(scene):
            out.setdefault(g.track_id, []).append((scene.t, g))
    return out


def loiterers(scenes: Sequence[StreetScene], min_share: float = 0.9, max_spread: float = 3.0) -> set[int]:
    """Persons seen in at least min_share of the frames whose standing point stays within
    max_spread of their own mean height (a loiterer's 1-2.5 m circle is 1-3 heights across;
    a passer-by covers many)."""
    out = set()
    for tid, obs in tracks_of(scenes).items():
        if obs[0][1].kind != "person" or len(obs) < min_share * len(scenes):
            continue
        feet = np.array([foot(g.box) for _, g in obs])
        height = np.mean([g.box[3] - g.box[1] for _, g in obs])
        if np.ptp(feet, axis=0).max() <= max_spread * height:
            out.add(tid)
    return out


@dataclass(frozen=True)
class TruthEvent:
    t: float
    track_id: int
    kind: str  # the object's class
    what: str  # "forward" / "backward" for a line, "enter" / "exit" for a zone
    box: tuple[float, float, float, float]


def line_crossings(scenes: Sequence[StreetScene], a, b) -> list[TruthEvent]:
    """Crossings of segment a->b by each track's standing point between consecutive sightings.
    forward: from the left of a->b to its right, as the picture shows it (y down)."""
    ax, ay = a
    bx, by = b
    events = []
    for tid, obs in tracks_of(scenes).items():
        for (t0, g0), (t1, g1) in zip(obs, obs[1:]):
            (px, py), (qx, qy) = foot(g0.box), foot(g1.box)
            s0 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
            s1 = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
            if s0 == 0 or s1 == 0 or (s0 > 0) == (s1 > 0):
                continue
            # where the step meets the infinite line, then whether that lies between a and b
            k = s0 / (s0 - s1)
            cx, cy = px + k * (qx - px), py + k * (qy - py)
            along = ((cx - ax) * (bx - ax) + (cy - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2)
            if 0.0 <= along <= 1.0:
                events.append(TruthEvent(t1, tid, g1.kind, "forward" if s1 > 0 else "backward", g1.box))
    return sorted(events, key=lambda e: e.t)


def zone_events(scenes: Sequence[StreetScene], polygon) -> list[TruthEvent]:
    """Enter and exit of each track's standing point; a track first seen inside enters then, and
    one last seen inside exits then."""
    contour = np.asarray(polygon, np.float32).reshape(-1, 1, 2)
    events = []
    for tid, obs in tracks_of(scenes).items():
        inside = False
        for t, g in obs:
            now = cv2.pointPolygonTest(contour, foot(g.box), False) > 0
            if now != inside:
                events.append(TruthEvent(t, tid, g.kind, "enter" if now else "exit", g.box))
                inside = now
        if inside:
            t, g = obs[-1]
            events.append(TruthEvent(t, tid, g.kind, "exit", g.box))
    return sorted(events, key=lambda e: e.t)


def match_events(found: Sequence[tuple[float, str, str, tuple]], expected: Sequence[TruthEvent],
                 tolerance_s: float) -> tuple[int, list, list]:
    """Pairs found events (t, class, what, box), earliest first, with the nearest expected one of the
    same class and `what` within tolerance_s. Returns (matched, found left, expected left)."""
    left = list(expected)
    unmatched = []
    matched = 0
    for t, label, what, box in sorted(found, key=lambda f: f[0]):
        best, best_dt = None, math.inf
        for e in left:
            dt = abs(e.t - t)
            if e.kind == label and e.what == what and dt <= tolerance_s and dt < best_dt:
                best, best_dt = e, dt
        if best is None:
            unmatched.append((t, label, what, box))
            continue
        left.remove(best)
        matched += 1
    return matched, unmatched, left


def owner(scene: StreetScene, label: str, box, min_iou: float = 0.3) -> int | None:
    """The ground-truth track of `label` that a reported box shows best in this scene, if any."""
    candidates = [g for g in truth(scene) if g.kind == label]
    if not candidates:
        return None
    overlap = _iou(np.array([box], np.float64), np.array([g.box for g in candidates], np.float64))[0]
    best = int(overlap.argmax())
    return candidates[best].track_id if overlap[best] >= min_iou else None


def hangout(scenes: Sequence[StreetScene], track_id: int, grow: float = 0.6) -> list[tuple[float, float]]:
    """A rectangle around where a track stood in the clip, grown by `grow` of its mean height on
    each side and clipped to the frame: a loitering zone drawn around a loiterer's spot."""
    obs = tracks_of(scenes)[track_id]
    feet = np.array([foot(g.box) for _, g in obs])
    height = float(np.mean([g.box[3] - g.box[1] for _, g in obs]))
    h, w = scenes[0].image.shape[:2]
    x1, y1 = np.maximum(feet.min(axis=0) - grow * height, 0)
    x2, y2 = np.minimum(feet.max(axis=0) + grow * height, (w - 1, h - 1))
    return [(float(x1), float(y1)), (float(x2), float(y1)), (float(x2), float(y2)), (float(x1), float(y2))]
