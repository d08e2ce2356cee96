"""The stream line on real live sources (image folders read by LiveSource) and the shipped
surveillance detector, THROUGHPUT hint, async and batched."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from agent.config.analytics import StreamAnalyticsConfig
from agent.infer.engine import Detector, Model
from agent.ingest.motion import MotionSettings
from agent.ingest.sources import Backoff, LiveSource, folder_opener
from agent.lines.stream import StreamLine, StreamSettings
from agent.postprocess.analytics import CameraAnalytics
from agent.postprocess.inspection_rule import DefectRule
from hw_sim import street_tracks
from hw_sim.street_scene import StreetRenderer
from models.evaluate import box_iou

REPO_ROOT = Path(__file__).resolve().parents[1]
DETECTOR = REPO_ROOT / "models" / "surveillance-detector" / "int8"
SEED = 19500  # not a build seed (models/build_surveillance.py)
SCHEMAS = REPO_ROOT / "agent" / "deliver" / "schemas"


class Recorder:
    """Collects what the line publishes (the outbox and MQTT are tested on their own)."""

    def __init__(self):
        self.events, self.crops = [], []
        self._lock = threading.Lock()

    def publish_event(self, line, event):
        with self._lock:
            self.events.append(event)

    def publish_crop(self, line, event_id, index, jpeg, meta):
        with self._lock:
            self.crops.append((event_id, index, jpeg, meta))


def _folder(tmp_path: Path, name: str, scenes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, scene in enumerate(scenes):
        cv2.imwrite(str(folder / f"{i:04d}.png"), scene.image)
    return folder


@pytest.fixture(scope="module")
def scenes():
    renderer = StreetRenderer(seed=SEED)
    return [renderer.render() for _ in range(6)]


@pytest.fixture(scope="module")
def detector():
    return Detector(Model(DETECTOR, performance_hint="THROUGHPUT"))


def _source(name: str, folder: Path, fps: float) -> LiveSource:
    return LiveSource(name, folder_opener(folder, fps=fps), "folder", backoff=Backoff(max_s=0.5))


class _Genlocked:
    """A camera whose frames come on a clock shared by every camera of the test (frame times on
    one grid, as from genlocked cameras), so frames of several cameras wait at the same time.
    Its images loop in order, as a folder's do."""

    def __init__(self, images: list[np.ndarray], fps: float, stop: threading.Event):
        self._images, self._period, self._stop, self._n = images, 1.0 / fps, stop, 0

    def read(self) -> np.ndarray | None:
        now = time.monotonic()
        if self._stop.wait((now // self._period + 1) * self._period - now):
            return None
        self._n += 1
        return self._images[(self._n - 1) % len(self._images)].copy()

    def close(self) -> None:
        pass


def _genlocked_source(name: str, images: list[np.ndarray], fps: float) -> LiveSource:
    return LiveSource(name, lambda stop: _Genlocked(images, fps, stop), "genlocked", backoff=Backoff(max_s=0.5))


def _run(line: StreamLine, sources, seconds: float, until=None) -> None:
    for source in sources:
        source.start()
    line.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            time.sleep(0.05)
    finally:
        assert line.stop()
        for source in sources:
            source.close()


def test_two_cameras_are_batched_and_their_objects_reported(tmp_path, scenes, detector):
    # Frames of different cameras share a batch only when they wait at the same time: the cameras
    # here tick together. The first coincidence of 2 or 3 frames compiles that batch size in the
    # background; until it is ready those frames go one by one.
    cams = {"east": scenes[:2], "west": scenes[2:4], "north": scenes[4:]}
    sources = {name: _genlocked_source(name, [s.image for s in shown], fps=10) for name, shown in cams.items()}
    recorder = Recorder()
    line = StreamLine("street", "box1", sources, detector, DefectRule(0.4), recorder,
                      StreamSettings(max_fps=10, event_interval_s=0.0))
    _run(line, sources.values(), 6.0)

    counters = line.counters
    assert counters["inferred"] >= 20 and counters["inference_errors"] == 0
    assert counters["batches"] < counters["inferred"], "frames of two cameras were never batched together"
    assert {e["camera"] for e in recorder.events} == set(cams)
    # The events' boxes are the objects of the frames they name (folder frames loop in name
    # order), so frames, cameras and results were never mixed up on the way.
    matched = checked = 0
    for event in recorder.events:
        shown = cams[event["camera"]]
        scene = shown[(event["frame"]["seq"] - 1) % len(shown)]
        truth = np.array([o.box for o in scene.objects], np.float32).reshape(-1, 4)
        for d in event["detections"]:
            matched += box_iou(np.array([d["box"]], np.float32), truth).max() >= 0.5
            checked += 1
    assert checked >= 20 and matched >= 0.9 * checked, (matched, checked)
    assert recorder.crops and all(meta["event_id"] in {e["event_id"] for e in recorder.events}
                                  for _, _, _, meta in recorder.crops)
    schema = json.loads((SCHEMAS / "detections.json").read_text())
    for event in recorder.events:
        jsonschema.validate(event, schema)
    # Frames are counted once each: skipped, inferred, dropped, or still waiting at the stop.
    accounted = (counters["skipped_rate"] + counters["skipped_still"] + counters["skipped_paused"]
                 + counters["dropped_behind"] + counters["inferred"] + line.health()["queues"]["pending"])
    assert accounted == counters["frames"]


def test_a_still_picture_is_not_inferred_but_looked_at_every_still_interval(tmp_path, scenes, detector):
    still = _folder(tmp_path, "still", [scenes[0]] * 2)  # two identical images: the picture never changes
    source = _source("cam", still, fps=10)
    line = StreamLine("street", "box1", {"cam": source}, detector, DefectRule(0.4), Recorder(),
                      StreamSettings(max_fps=10, motion=MotionSettings(), still_interval_s=1.0))
    _run(line, [source], 4.0)
    counters = line.counters
    assert counters["frames"] >= 25
    assert counters["skipped_still"] >= counters["frames"] - 8
    assert 2 <= counters["inferred"] <= 6  # the first frame, then about one a second


def test_motion_is_inferred_at_once(tmp_path, scenes, detector):
    # alternate two different street pictures: every frame moves
    source = _source("cam", _folder(tmp_path, "moving", scenes[:2]), fps=8)
    line = StreamLine("street", "box1", {"cam": source}, detector, DefectRule(0.4), Recorder(),
                      StreamSettings(max_fps=8, motion=MotionSettings(), still_interval_s=None))
    _run(line, [source], 3.0)
    assert line.counters["inferred"] >= 0.6 * line.counters["frames"]


def test_paused_line_infers_nothing_and_an_offline_camera_is_a_problem(tmp_path, scenes, detector):
    live = _source("live", _folder(tmp_path, "live", scenes[:2]), fps=10)
    dead = LiveSource("dead", folder_opener(tmp_path / "missing"), "folder", stall_timeout_s=0.5,
                      backoff=Backoff(max_s=0.5))
    line = StreamLine("street", "box1", {"live": live, "dead": dead}, detector, DefectRule(0.4), Recorder())
    line.paused = True
    problems = []
    _run(line, [live, dead], 2.5, until=lambda: problems.append(line.pipeline_problem()) or False)
    assert line.counters["inferred"] == 0 and line.counters["skipped_paused"] > 0
    assert "camera offline: dead" in [p for p in problems if p][-1]
    assert not line.stage_activity()["batch"]["alive"]  # stopped: the watchdog would see it


ALERT_SEED = 19531  # a clip with a loiterer and crossings of the centre line in its first 12 s


def test_analytics_publish_alerts_from_every_inferred_frame(tmp_path, scenes, detector):
    """One camera with a tracker, a loitering zone, a zone and a tripwire; another without analytics.
    Alert events are their own events, never rate-limited, and carry the ids the detections show."""
    clip = street_tracks.clip(ALERT_SEED, 14.0, fps=5.0, persons=4, vehicles=3, loiterers=1)
    (loiterer,) = street_tracks.loiterers(clip)
    centre = ((320.0, 0.0), (320.0, 480.0))
    assert street_tracks.line_crossings(clip[:60], *centre)  # the premise: something crosses the line
    config = StreamAnalyticsConfig.model_validate({
        "alert_crops": ["loitering", "line_cross"],
        "cameras": {"east": {
            "zones": [{"name": "spot", "polygon": street_tracks.hangout(clip, loiterer), "classes": ["person"],
                       "loiter_s": 4.0, "events": []},
                      {"name": "centre", "polygon": [[160, 200], [480, 200], [480, 480], [160, 480]]}],
            "tripwires": [{"name": "middle", "line": [list(p) for p in centre]}]}}})
    sources = {"east": _source("east", _folder(tmp_path, "east", clip), fps=5),
               "west": _source("west", _folder(tmp_path, "west", scenes[:3]), fps=5)}
    recorder = Recorder()
    line = StreamLine("street", "box1", sources, detector, DefectRule(0.4), recorder,
                      StreamSettings(max_fps=5, event_interval_s=2.0), analytics=config.build(["east"]))
    kinds = lambda: {e["kind"] for e in list(recorder.events)}  # noqa: E731
    _run(line, sources.values(), 12.0, until=lambda: {"loitering", "line_cross", "zone_enter"} <= kinds())

    alert_schema = json.loads((SCHEMAS / "alert.json").read_text())
    detections_schema = json.loads((SCHEMAS / "detections.json").read_text())
    crop_schema = json.loads((SCHEMAS / "crop.json").read_text())
    alerts = [e for e in recorder.events if e["kind"] != "detections"]
    detections = [e for e in recorder.events if e["kind"] == "detections"]
    for event in alerts:
        jsonschema.validate(event, alert_schema)
    for event in detections:
        jsonschema.validate(event, detections_schema)
    assert {"loitering", "line_cross", "zone_enter"} <= {e["kind"] for e in alerts}
    assert all(e["camera"] == "east" for e in alerts)
    # the loitering alert is the loiterer's, after loiter_s in the zone
    loitering = [e for e in alerts if e["kind"] == "loitering"]
    scene_of = lambda e: clip[(e["frame"]["seq"] - 1) % len(clip)]  # noqa: E731
    assert [street_tracks.owner(scene_of(e), e["label"], e["box"]) for e in loitering] == [loiterer]
    assert loitering[0]["zone"] == "spot" and loitering[0]["dwell_s"] >= 4.0 and loitering[0]["crop"] == 0
    # track ids: on the east camera's detections only, and the alerts' tracks are among them
    east = [d for e in detections if e["camera"] == "east" for d in e["detections"]]
    west = [d for e in detections if e["camera"] == "west" for d in e["detections"]]
    assert east and west and all("track_id" in d for d in east) and not any("track_id" in d for d in west)
    assert {e["track_id"] for e in alerts} & {d["track_id"] for d in east}
    # not rate-limited: more alerts than the 2 s interval would let through
    assert len(alerts) > len([e for e in detections if e["camera"] == "east"])
    crops = [(meta, event_id) for event_id, _, _, meta in recorder.crops if "alert" in meta]
    assert {meta["alert"] for meta, _ in crops} <= {"loitering", "line_cross"} and crops
    alert_ids = {e["event_id"]: e for e in alerts}
    for meta, event_id in crops:
        assert alert_ids[event_id]["crop"] == 0 and meta["track_id"] == alert_ids[event_id]["track_id"]
        jsonschema.validate({**{k: str(v) for k, v in meta.items()}, "seq": "1"}, crop_schema)
    # every inferred east frame went through the tracker, not only those that made an event
    health = line.health()["analytics"]["east"]
    assert health["frames"] + health["out_of_order"] == line.per_camera["east"]["inferred"]
    assert line.per_camera["east"]["inferred"] > 3 * len([e for e in detections if e["camera"] == "east"])
    assert health["alerts"]["loitering"] == 1 and line.counters["alerts"] == len(alerts)
    assert set(line.health()["analytics"]) == {"east"}
    print(f"{line.per_camera['east']['inferred']} east frames inferred, {len(alerts)} alerts "
          f"({', '.join(sorted({e['kind'] for e in alerts}))}), analytics {health}")


def test_analytics_for_a_camera_the_line_does_not_read_is_refused(tmp_path, scenes, detector):
    source = _source("cam", _folder(tmp_path, "cam", scenes[:1]), fps=5)
    analytics = StreamAnalyticsConfig().build(["other"])
    with pytest.raises(ValueError, match="camera 'other'"):
        StreamLine("street", "box1", {"cam": source}, detector, DefectRule(0.4), Recorder(), analytics=analytics)


class _FailsOnce(CameraAnalytics):
    """Real analytics with one injected fault: the first frame's update raises."""

    def __init__(self, camera):
        super().__init__(camera)
        self.failed = False

    def update(self, t, detections, frame_size=None):
        if not self.failed:
            self.failed = True
            raise RuntimeError("injected fault")
        return super().update(t, detections, frame_size)


def test_an_analytics_fault_costs_neither_the_detections_events_nor_later_frames(tmp_path, scenes, detector):
    source = _source("cam", _folder(tmp_path, "cam", [scenes[0]] * 2), fps=6)  # a still street: tracks confirm
    recorder = Recorder()
    analytics = _FailsOnce("cam")
    line = StreamLine("street", "box1", {"cam": source}, detector, DefectRule(0.4), recorder,
                      StreamSettings(max_fps=6, event_interval_s=0.0), analytics={"cam": analytics})
    _run(line, [source], 3.0)
    assert line.counters["analytics_errors"] == 1 and line.counters["inferred"] >= 5
    assert len(recorder.events) == line.counters["events"] == line.per_camera["cam"]["events"]
    assert analytics.tracker.counters["frames"] == line.counters["inferred"] - 1
    assert any(d["track_id"] is not None for e in recorder.events for d in e["detections"])
