"""The config models of a stream line's analytics (lines.NAME.analytics), from YAML as a user writes it."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from agent.config.analytics import StreamAnalyticsConfig
from agent.postprocess.tracking import TrackerSettings
from agent.postprocess.zones import TripwireSettings, ZoneSettings

EXAMPLE = """
tracking: {high_score: 0.55, min_hits: 2, max_lost_s: 5}
alert_crops: [loitering, zone_enter]
cameras:
  gate:
    zones:
      - name: yard
        polygon: [[40, 300], [600, 300], [600, 470], [40, 470]]
        classes: [person]
        loiter_s: 60
        events: [enter]
    tripwires:
      - {name: entrance, line: [[0, 260], [640, 260]], directions: [forward], anchor: center}
"""


def parse(text: str) -> StreamAnalyticsConfig:
    return StreamAnalyticsConfig.model_validate(yaml.safe_load(text))


def errors(text: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse(text)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_the_example_builds_the_runtime_objects():
    config = parse(EXAMPLE)
    analytics = config.build(["gate", "street"])
    assert set(analytics) == {"gate", "street"}  # every camera of the line is tracked
    gate = analytics["gate"]
    assert gate.tracker.settings == TrackerSettings(high_score=0.55, min_hits=2, max_lost_s=5.0)
    assert gate.zones[0].settings == ZoneSettings("yard", ((40, 300), (600, 300), (600, 470), (40, 470)),
                                                  frozenset({"person"}), loiter_s=60.0, events=frozenset({"enter"}))
    assert gate.tripwires[0].settings == TripwireSettings("entrance", (0, 260), (640, 260), anchor="center",
                                                          directions=frozenset({"forward"}))
    assert gate.alert_crops == {"loitering", "zone_enter"}
    assert analytics["street"].zones == [] and analytics["street"].tripwires == []


def test_defaults_are_the_runtime_defaults():
    config = parse("{}")
    assert config.tracking.settings() == TrackerSettings()
    zone = parse("cameras: {c: {zones: [{name: z, polygon: [[0, 0], [9, 0], [9, 9]]}]}}").cameras["c"].zones[0]
    assert zone.settings() == ZoneSettings("z", ((0, 0), (9, 0), (9, 9)))


@pytest.mark.parametrize("text, expected", [
    ("tracking: {hig_score: 0.5}", "tracking.hig_score: Extra inputs are not permitted"),
    ("tracking: {low_score: 0.6, high_score: 0.5}", "must not be over high_score"),
    ("tracking: {min_hits: 0}", "greater than or equal to 1"),
    ("alert_crops: [loiter]", "alert_crops.0: Input should be 'zone_enter'"),
    ("cameras: {c: {zones: [{name: z, polygon: [[0, 0], [9, 9]]}]}}", "at least 3 points"),
    ("cameras: {c: {zones: [{name: z, polygon: [[0, 0], [100, 100], [100, 0], [0, 60]]}]}}", "edges 1 and 3 cross"),
    ("cameras: {c: {zones: [{name: 'a b', polygon: [[0, 0], [9, 0], [9, 9]]}]}}", "name: String should match"),
    ("cameras: {c: {zones: [{name: z, polygon: [[0, 0], [9, 0], [9, 9]], loiter_s: 0}]}}", "greater than 0"),
    ("cameras: {c: {zones: [{name: z, polygon: [[0, 0], [9, 0], [9, 9]], events: [linger]}]}}", "Input should be 'enter'"),
    ("cameras: {c: {tripwires: [{name: w, line: [[5, 5], [5, 5]]}]}}", "two different points"),
    ("cameras: {c: {tripwires: [{name: w, line: [[5, 5]]}]}}", "cameras.c.tripwires.0.line"),
    ("cameras: {c: {tripwires: [{name: w, line: [[0, 0], [9, 9]], directions: [in]}]}}", "Input should be 'forward'"),
    ("cameras: {c: {zones: [{name: x, polygon: [[0, 0], [9, 0], [9, 9]]}], tripwires: [{name: x, line: [[0, 0], [9, 9]]}]}}",
     "the name 'x' is used twice"),
])
def test_mistakes_are_named(text, expected):
    found = errors(text)
    assert any(expected in e for e in found), found


def test_cross_references_name_cameras_and_classes():
    config = parse(EXAMPLE)
    assert config.reference_issues(["gate"], ["person", "vehicle"]) == []
    assert config.reference_issues(["north"]) == [
        (("cameras", "gate"), "camera 'gate' is not one of the line's cameras (north)")]
    issues = config.reference_issues(["gate"], ["car", "bus"])
    assert issues == [(("cameras", "gate", "zones", 0, "classes"), "the detector has no class 'person' (it has bus, car)")]
