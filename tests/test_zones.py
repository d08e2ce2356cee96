"""Zones, tripwires and loitering: the pure geometry, and the rules fed with hand-made tracks."""

from __future__ import annotations

import pytest

from agent.postprocess.tracking import EndedTrack, TrackedObject
from agent.postprocess.zones import (Polygon, Tripwire, TripwireSettings, Zone, ZoneSettings, anchor_point,
                                     crosses_segment, polygon_area, polygon_problem, side_of_line)

SQUARE = ((100.0, 100.0), (300.0, 100.0), (300.0, 300.0), (100.0, 300.0))


def standing(foot_x: float, foot_y: float, height: float = 100.0):
    return (foot_x - height / 4, foot_y - height, foot_x + height / 4, foot_y)


def person(track_id: int, foot_x: float, foot_y: float, height: float = 100.0, label: str = "person",
           first_seen: float = 0.0, born=None) -> TrackedObject:
    """A track whose box stands on (foot_x, foot_y); born: where its first detection stood."""
    first_box = None if born is None else standing(*born, height)
    return TrackedObject(track_id, label, 0, 0.9, standing(foot_x, foot_y, height), (0.0, 0.0), first_seen, 5, 0,
                         first_box)


def ended(track_id: int, foot_x: float, foot_y: float, last_seen: float, height: float = 100.0) -> EndedTrack:
    box = (foot_x - height / 4, foot_y - height, foot_x + height / 4, foot_y)
    return EndedTrack(track_id, "person", box, 0.0, last_seen)


# -- geometry -------------------------------------------------------------------------------------

def test_anchor_points():
    box = (10.0, 20.0, 30.0, 60.0)
    assert anchor_point(box) == (20.0, 60.0)
    assert anchor_point(box, "center") == (20.0, 40.0)
    assert anchor_point(box, "top_center") == (20.0, 20.0)


def test_side_of_a_directed_line_as_the_picture_shows_it():
    a, b = (0.0, 100.0), (200.0, 100.0)  # drawn left to right
    assert side_of_line(a, b, (50.0, 130.0)) == pytest.approx(30.0)  # below on screen: its right
    assert side_of_line(a, b, (50.0, 60.0)) == pytest.approx(-40.0)
    assert side_of_line(b, a, (50.0, 130.0)) == pytest.approx(-30.0)  # the same point, line reversed
    down = ((100.0, 0.0), (100.0, 200.0))  # drawn top to bottom: its right is the picture's left
    assert side_of_line(*down, (80.0, 50.0)) > 0 > side_of_line(*down, (120.0, 50.0))


def test_a_step_crosses_the_segment_only_between_its_ends():
    a, b = (0.0, 100.0), (200.0, 100.0)
    assert crosses_segment((50.0, 80.0), (60.0, 120.0), a, b)
    assert crosses_segment((0.0, 90.0), (0.0, 110.0), a, b)  # at the end point
    assert not crosses_segment((250.0, 80.0), (260.0, 120.0), a, b)  # past b
    assert not crosses_segment((-30.0, 80.0), (-10.0, 120.0), a, b)  # before a
    assert not crosses_segment((50.0, 80.0), (60.0, 90.0), a, b)  # stays on one side
    # a diagonal step that passes the line beyond b although both ends are above/below the segment
    assert not crosses_segment((150.0, 0.0), (450.0, 300.0), a, b)


def test_polygon_distance_is_signed_and_problems_are_named():
    square = Polygon(SQUARE)
    assert square.distance((200.0, 200.0)) == pytest.approx(100.0)
    assert square.distance((200.0, 290.0)) == pytest.approx(10.0)
    assert square.distance((200.0, 320.0)) == pytest.approx(-20.0)
    assert square.distance((100.0, 200.0)) == pytest.approx(0.0)
    assert polygon_area(SQUARE) == pytest.approx(40000.0)
    assert polygon_area(tuple(reversed(SQUARE))) == pytest.approx(40000.0)
    assert "at least 3" in polygon_problem([(0, 0), (1, 1)])
    assert "no area" in polygon_problem([(0, 0), (10, 10), (20, 20)])
    assert "cross" in polygon_problem([(0, 0), (100, 100), (100, 0), (0, 60)])  # a bow tie
    assert polygon_problem(SQUARE) is None
    assert polygon_problem([(0, 0), (100, 0), (100, 100), (50, 40), (0, 100)]) is None  # concave is fine
    with pytest.raises(ValueError, match="cross"):
        Polygon([(0, 0), (100, 100), (100, 0), (0, 60)])


# -- zones ----------------------------------------------------------------------------------------

def test_enter_exit_and_occupancy_per_class():
    zone = Zone(ZoneSettings("yard", SQUARE))
    assert zone.update(0.0, [person(1, 50, 200), person(2, 200, 200, label="vehicle")], []) \
        and zone.occupancy() == {"vehicle": 1}  # 2 was first seen inside: it enters at once
    alerts = zone.update(1.0, [person(1, 150, 200), person(2, 200, 200, label="vehicle")], [])
    assert [(a.kind, a.track_id) for a in alerts] == [("zone_enter", 1)]
    assert alerts[0].counts == {"person": 1, "vehicle": 1} and alerts[0].name == "yard"
    assert alerts[0].point == (150.0, 200.0) and alerts[0].score == 0.9
    alerts = zone.update(4.0, [person(1, 350, 200)], [])
    assert [(a.kind, a.reason, a.dwell_s) for a in alerts] == [("zone_exit", "left", 3.0)]
    assert alerts[0].counts == {"vehicle": 1}
    assert zone.counters["enter"] == {"vehicle": 1, "person": 1} and zone.counters["exit"] == {"person": 1}


def test_a_track_jittering_at_the_edge_does_not_flap():
    zone = Zone(ZoneSettings("yard", SQUARE, hysteresis=0.1))  # 100 px tall: 10 px past the edge
    alerts = zone.update(0.0, [person(1, 200, 320)], [])  # outside, 20 px below the edge
    for k, y in enumerate([305, 295, 306, 294, 303, 297, 305, 292, 304]):  # within 8 px of the edge
        alerts += zone.update(1.0 + k, [person(1, 200, y)], [])
    assert alerts == []
    alerts = zone.update(20.0, [person(1, 200, 289)], [])  # 11 px inside
    assert [a.kind for a in alerts] == ["zone_enter"]
    for k, y in enumerate([305, 295, 308, 292]):
        alerts += zone.update(21.0 + k, [person(1, 200, y)], [])
    assert [a.kind for a in alerts] == ["zone_enter"]  # still inside: never 10 px out
    assert [a.kind for a in zone.update(30.0, [person(1, 200, 311)], [])] == ["zone_exit"]
    # hysteresis 0: the same jitter flaps on every step over the edge
    plain = Zone(ZoneSettings("yard", SQUARE, hysteresis=0.0))
    flaps = plain.update(0.0, [person(1, 200, 320)], [])
    for k, y in enumerate([295, 305, 295, 305]):
        flaps += plain.update(1.0 + k, [person(1, 200, y)], [])
    assert [a.kind for a in flaps] == ["zone_enter", "zone_exit"] * 2


def test_loitering_fires_once_per_track_after_loiter_s_and_lost_tracks_exit():
    zone = Zone(ZoneSettings("door", SQUARE, classes=frozenset({"person"}), loiter_s=10.0))
    alerts = []
    for k in range(0, 31, 2):  # person 1 stays 30 s; person 2 crosses in 4 s; a vehicle stays too
        tracks = [person(1, 200 + (k % 4), 200), person(3, 210, 210, label="vehicle")]
        if k <= 6:
            tracks.append(person(2, 50 + 50 * k, 150, first_seen=0.0))
        alerts += zone.update(float(k), tracks, [])
    loiter = [a for a in alerts if a.kind == "loitering"]
    assert [(a.track_id, a.t, a.dwell_s) for a in loiter] == [(1, 10.0, 10.0)]
    assert all(a.label == "person" for a in alerts)  # the zone watches persons only
    # leaving and coming back does not fire again for the same track
    alerts = zone.update(32.0, [person(1, 400, 200)], []) + zone.update(50.0, [person(1, 200, 200)], [])
    alerts += zone.update(70.0, [person(1, 200, 200)], [])
    assert [a.kind for a in alerts] == ["zone_exit", "zone_enter"]
    alerts = zone.update(71.0, [], [ended(1, 200, 200, last_seen=70.0)])
    assert [(a.kind, a.reason, a.t, a.score) for a in alerts] == [("zone_exit", "lost", 70.0, None)]
    assert zone.occupancy() == {}


def test_a_track_born_inside_loiters_from_its_first_sighting():
    zone = Zone(ZoneSettings("bench", SQUARE, loiter_s=5.0, events=frozenset()))
    assert zone.update(3.0, [person(7, 200, 200, first_seen=1.0)], []) == []  # enter not reported
    assert zone.occupancy() == {"person": 1} and zone.counters["enter"] == {"person": 1}
    alerts = zone.update(6.0, [person(7, 200, 200, first_seen=1.0)], [])
    assert [(a.kind, a.entered) for a in alerts] == [("loitering", 1.0)]


# -- tripwires ------------------------------------------------------------------------------------

def test_crossings_in_both_directions_with_counts():
    wire = Tripwire(TripwireSettings("gate", (0.0, 200.0), (400.0, 200.0)))
    alerts = []
    for t, y in enumerate([150, 170, 230, 260]):  # walks down the picture: left -> right of a -> b
        alerts += wire.update(float(t), [person(1, 100, y)], [])
    for t, y in enumerate([260, 180, 120]):
        alerts += wire.update(10.0 + t, [person(2, 300, y, label="vehicle")], [])
    assert [(a.track_id, a.direction, a.t) for a in alerts] == [(1, "forward", 2.0), (2, "backward", 11.0)]
    assert alerts[1].counts == {"forward": {"person": 1}, "backward": {"vehicle": 1}}


def test_tripwire_dead_band_ignores_jitter_on_the_line_and_passes_beside_it():
    wire = Tripwire(TripwireSettings("gate", (0.0, 200.0), (400.0, 200.0), hysteresis=0.1))
    alerts = wire.update(0.0, [person(1, 100, 180)], [])  # 20 px above: clearly on its left
    for t, y in enumerate([195, 205, 196, 208, 192, 207]):  # within 10 px of the line
        alerts += wire.update(1.0 + t, [person(1, 100, y)], [])
    alerts += wire.update(9.0, [person(1, 100, 185)], [])  # back where it came from
    assert alerts == []
    # crossing the line's extension beyond b is not a crossing of the tripwire
    alerts += wire.update(10.0, [person(2, 500, 150)], []) + wire.update(11.0, [person(2, 500, 260)], [])
    assert alerts == [] and wire.counters == {"forward": {}, "backward": {}}


def test_only_chosen_directions_are_reported_but_all_are_counted():
    wire = Tripwire(TripwireSettings("in", (0.0, 200.0), (400.0, 200.0), directions=frozenset({"forward"}),
                                     classes=frozenset({"person"})))
    alerts = []
    for t, y in enumerate([150, 250, 150, 250]):
        alerts += wire.update(float(t), [person(1, 100, y), person(2, 120, y, label="vehicle")], [])
    assert [a.direction for a in alerts] == ["forward", "forward"]
    assert wire.counters == {"forward": {"person": 2}, "backward": {"person": 1}}


def test_a_track_first_seen_on_the_far_side_has_not_crossed_and_ended_tracks_are_forgotten():
    wire = Tripwire(TripwireSettings("gate", (0.0, 200.0), (400.0, 200.0)))
    assert wire.update(0.0, [person(1, 100, 260)], []) == []
    assert wire.update(1.0, [], [ended(1, 100, 260, 0.0)]) == []
    assert wire.update(2.0, [person(1, 100, 150)], []) == []  # the same id again (never happens) starts afresh


def test_what_a_track_did_while_tentative_counts_from_where_it_was_born():
    # confirmed (first reported) already past the line and inside the zone, born before both
    wire = Tripwire(TripwireSettings("gate", (0.0, 200.0), (400.0, 200.0)))
    zone = Zone(ZoneSettings("yard", ((0.0, 220.0), (400.0, 220.0), (400.0, 400.0), (0.0, 400.0))))
    first = person(1, 100, 260, born=(100, 150), first_seen=1.0)
    crossed = wire.update(2.0, [first], [])
    entered = zone.update(2.0, [first], [])
    assert [(a.kind, a.direction) for a in crossed] == [("line_cross", "forward")]
    assert [(a.kind, a.t) for a in entered] == [("zone_enter", 2.0)]
    # born inside: inside since its first detection (its dwell counts from then)
    zone = Zone(ZoneSettings("yard", SQUARE, loiter_s=3.0))
    assert [a.kind for a in zone.update(2.0, [person(2, 200, 200, born=(210, 200), first_seen=0.5)], [])] == ["zone_enter"]
    assert [(a.kind, a.entered) for a in zone.update(3.5, [person(2, 200, 200, first_seen=0.5)], [])] == [("loitering", 0.5)]
    # born on the line (within the dead band): no side to start from, so no crossing
    wire = Tripwire(TripwireSettings("gate", (0.0, 200.0), (400.0, 200.0)))
    assert wire.update(2.0, [person(3, 100, 260, born=(100, 195))], []) == []


def test_settings_are_checked():
    with pytest.raises(ValueError, match="two different points"):
        TripwireSettings("w", (5.0, 5.0), (5.2, 5.0))
    with pytest.raises(ValueError, match="anchor"):
        ZoneSettings("z", SQUARE, anchor="feet")
    with pytest.raises(ValueError, match="events"):
        ZoneSettings("z", SQUARE, events=frozenset({"enter", "linger"}))
    with pytest.raises(ValueError, match="loiter_s"):
        ZoneSettings("z", SQUARE, loiter_s=0)
