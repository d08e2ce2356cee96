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

from agent.infer.engine import Detector, Model
from agent.ingest.motion import MotionSettings
from agent.ingest.sources import Backoff, LiveSource, folder_opener
from agent.lines.stream import StreamLine, StreamSettings
from agent.postprocess.inspection_rule import DefectRule
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
    cams = {"east": scenes[:3], "west": scenes[3:]}
    sources = {name: _source(name, _folder(tmp_path, name, shown), fps=6) for name, shown in cams.items()}
    recorder = Recorder()
    line = StreamLine("street", "box1", sources, detector, DefectRule(0.4), recorder,
                      StreamSettings(max_fps=6, event_interval_s=0.0))
    _run(line, sources.values(), 6.0)

    counters = line.counters
    assert counters["inferred"] >= 20 and counters["inference_errors"] == 0
    assert counters["batches"] < counters["inferred"], "frames of two cameras were never batched together"
    assert {e["camera"] for e in recorder.events} == {"east", "west"}
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
