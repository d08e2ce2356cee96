"""The tracker on hand-made detections: birth, death, ids, classes, the two score stages, and
time-based motion at uneven frame rates. Its accuracy on rendered street video with the real
detector is in test_surveillance_analytics.py."""

from __future__ import annotations

import pytest

from agent.events import Detection
from agent.postprocess.tracking import Tracker, TrackerSettings, buffered_iou, box_iou

import numpy as np


def det(x: float, y: float, w: float = 40.0, h: float = 80.0, score: float = 0.9, label: str = "person") -> Detection:
    return Detection(0 if label == "person" else 1, label, score, (x, y, x + w, y + h))


def test_a_track_is_born_after_min_hits_and_keeps_its_id():
    tracker = Tracker(TrackerSettings(min_hits=3))
    reported = []
    for k in range(10):
        update = tracker.update(k * 0.2, [det(100 + 10 * k, 100)])
        reported.append(update.track_ids[0])
    assert reported[:2] == [None, None]
    assert reported[2:] == [1] * 8
    assert tracker.active == 1 and tracker.counters["born"] == 1 and tracker.counters["confirmed"] == 1
    last = tracker.update(2.0, [det(200, 100)])
    assert last.tracks[0].velocity[0] == pytest.approx(50.0, rel=0.1)  # 10 px per 0.2 s
    assert last.tracks[0].first_seen == 0.0 and last.tracks[0].detection == 0


def test_a_tentative_track_dies_at_its_first_miss():
    tracker = Tracker(TrackerSettings(min_hits=3))
    tracker.update(0.0, [det(100, 100)])
    tracker.update(0.2, [det(102, 100)])
    tracker.update(0.4, [])
    update = tracker.update(0.6, [det(104, 100)])
    assert update.track_ids == (None,) and tracker.counters["born"] == 2  # started again


def test_death_after_max_misses_counts_inferred_frames_not_time():
    tracker = Tracker(TrackerSettings(min_hits=1, max_misses=3, max_lost_s=100.0))
    tracker.update(0.0, [det(100, 100)])
    assert tracker.update(1.0, []).ended == ()
    assert tracker.update(2.0, []).coasting == (1,)
    update = tracker.update(3.0, [])
    assert [e.track_id for e in update.ended] == [1] and update.ended[0].last_seen == 0.0
    # frames that never came are no misses: a still scene looked at every few seconds keeps its track
    tracker = Tracker(TrackerSettings(min_hits=1, max_misses=3, max_lost_s=100.0))
    ids = [tracker.update(t, [det(100, 100)]).track_ids[0] for t in (0.0, 5.0, 10.0, 15.0, 20.0)]
    assert ids == [1] * 5


def test_max_lost_s_ends_tracks_of_a_camera_that_went_dark():
    tracker = Tracker(TrackerSettings(min_hits=1, max_misses=100, max_lost_s=3.0))
    tracker.update(0.0, [det(100, 100), det(300, 100, label="vehicle")])
    update = tracker.update(10.0, [det(100, 100)])
    assert sorted(e.track_id for e in update.ended) == [1, 2]
    assert update.track_ids == (3,)  # the same place, but too late to be the same track


def test_uneven_frame_times_are_used_for_prediction():
    # 40 px wide, moving 400 px/s: frames every 0.05 s, then a gap of 0.35 s (dropped frames) in
    # which it moves 140 px, far past its own width: only a prediction over the real interval finds it.
    times = [0.05 * k for k in range(8)] + [0.7, 0.75, 0.8]

    def ids(clock):
        tracker = Tracker(TrackerSettings(min_hits=2, buffer=0.0, lost_buffer_per_s=0.0))
        return [tracker.update(clock(k, t), [det(100 + 400 * t, 100)]).track_ids[0] for k, t in enumerate(times)]

    with_time = ids(lambda k, t: t)
    assert with_time[1:] == [1] * (len(times) - 1)
    # The same frames stamped as if they came at a steady rate lose the object after the gap:
    # this is what counting frames instead of time would do.
    steady = ids(lambda k, t: 0.05 * k)
    assert steady[8] != 1


def test_tracks_only_take_detections_of_their_own_class():
    tracker = Tracker(TrackerSettings(min_hits=1))
    tracker.update(0.0, [det(100, 100)])
    update = tracker.update(0.2, [det(100, 100, label="vehicle")])
    assert update.track_ids == (2,) and update.coasting == (1,)
    assert update.tracks[0].label == "vehicle"


def test_weak_detections_keep_a_track_going_but_never_start_one():
    settings = TrackerSettings(high_score=0.5, low_score=0.1, min_hits=2)
    tracker = Tracker(settings)
    for k in range(3):
        tracker.update(k * 0.2, [det(100 + 5 * k, 100)])
    weak = [tracker.update(0.6 + k * 0.2, [det(115 + 5 * k, 100, score=0.2)]).track_ids[0] for k in range(5)]
    assert weak == [1] * 5  # partly hidden: weak detections, same track
    # a weak detection alone starts nothing, and one under low_score is ignored altogether
    other = Tracker(settings)
    assert [other.update(k * 0.2, [det(300, 100, score=0.3)]).track_ids[0] for k in range(5)] == [None] * 5
    assert other.counters["born"] == 0
    assert tracker.update(1.8, [det(140, 100, score=0.05)]).track_ids == (None,)


def test_two_walkers_crossing_keep_their_ids():
    tracker = Tracker(TrackerSettings(min_hits=2))
    history = {}
    for k in range(30):
        t = k * 0.1
        a, b = det(100 + 100 * t, 100), det(400 - 100 * t, 110)  # they meet at t = 1.5 and overlap
        update = tracker.update(t, [a, b])
        for name, track_id in zip("ab", update.track_ids):
            if track_id is not None:
                history.setdefault(name, set()).add(track_id)
    assert history == {"a": {1}, "b": {2}}


def test_an_out_of_order_frame_is_not_used():
    tracker = Tracker(TrackerSettings(min_hits=1))
    tracker.update(1.0, [det(100, 100)])
    late = tracker.update(0.5, [det(100, 100)])
    assert late.track_ids == (None,) and late.tracks == () and tracker.counters["out_of_order"] == 1
    assert tracker.update(1.2, [det(101, 100)]).track_ids == (1,)


def test_births_past_max_tracks_are_refused_and_counted():
    tracker = Tracker(TrackerSettings(min_hits=1, max_tracks=5))
    update = tracker.update(0.0, [det(60 * i, 100) for i in range(8)])
    assert update.track_ids == (1, 2, 3, 4, 5, None, None, None)
    assert tracker.counters["births_refused"] == 3


def test_settings_are_checked():
    with pytest.raises(ValueError, match="low_score"):
        TrackerSettings(high_score=0.3, low_score=0.4)
    with pytest.raises(ValueError, match="min_hits"):
        TrackerSettings(min_hits=0)


def test_buffered_iou_grows_both_boxes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[12.0, 0.0, 22.0, 10.0]])  # 2 px apart: no overlap
    assert box_iou(a, b)[0, 0] == 0.0
    assert buffered_iou(a, b, np.array([0.0]))[0, 0] == 0.0
    grown = buffered_iou(a, b, np.array([0.2]))[0, 0]  # each 2 px wider on both sides: 2 px overlap of 14
    assert grown == pytest.approx(2 * 14 / (2 * 14 * 14 - 2 * 14))


def _soak(frames: int) -> None:
    """A crowd of 20 crossing the picture for `frames` frames at 5 fps, through 2 zones and a
    tripwire: state stays bounded by the live tracks, and every count adds up."""
    from agent.postprocess.analytics import CameraAnalytics
    from agent.postprocess.zones import TripwireSettings, ZoneSettings
    from hw_sim.analytics_eval import SyntheticCrowd

    crowd = SyntheticCrowd(20, seed=3)
    zones = [ZoneSettings("left", ((0, 0), (320, 0), (320, 480), (0, 480)), loiter_s=5.0),
             ZoneSettings("all", ((0, 0), (640, 0), (640, 480), (0, 480)))]
    analytics = CameraAnalytics("cam", TrackerSettings(max_tracks=64), zones,
                                [TripwireSettings("mid", (320, 0), (320, 480))])
    tracker = analytics.tracker
    alerts = {kind: 0 for kind in analytics.counters}
    most = 0
    for k in range(frames):
        for alert in analytics.update(k * 0.2, crowd.step(0.2)).alerts:
            alerts[alert.kind] += 1
        live = tracker.active
        most = max(most, live + tracker.tentative)
        assert all(rule.known <= live for rule in (*analytics.zones, *analytics.tripwires))
        assert sum(analytics.zones[1].occupancy().values()) <= live
    counters = tracker.counters
    assert most <= 64 and counters["births_refused"] == 0
    assert counters["confirmed"] == counters["ended"] + tracker.active  # no confirmed track unaccounted for
    for zone in analytics.zones:
        for label in ("person", "vehicle"):  # every entry left, or is still inside
            assert zone.counters["enter"].get(label, 0) - zone.counters["exit"].get(label, 0) \
                == zone.occupancy().get(label, 0)
    assert alerts == analytics.counters and min(alerts.values()) > 0
    print(f"{frames} frames: {counters}, alerts {alerts}, at most {most} tracks at once")


def test_state_stays_bounded_and_counts_add_up():
    _soak(3000)  # 10 minutes at 5 fps


@pytest.mark.slow
def test_state_stays_bounded_over_a_day_of_frames():
    _soak(100_000)  # about 5.5 hours at 5 fps
