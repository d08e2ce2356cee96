"""Burst capture: the trigger's frame and the next ones, the sharpest kept (variance of the
Laplacian). Frames of known blur, through a folder source read live and through the HTTP
snapshot camera (hw_sim SimCamera)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from agent.ingest.burst import sharpest, sharpness
from agent.ingest.camera import HttpSnapshotCamera
from agent.ingest.sources import LiveSource, folder_opener
from agent.lines.inspection import InspectionLine
from agent.postprocess.inspection_rule import DefectRule
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.scene import PartRenderer

pytestmark = pytest.mark.timeout(60)

EVENT_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "agent/deliver/schemas/event.json").read_text())
BLUR_SIGMAS = (4.0, 2.0, 0.0, 1.0, 3.0)  # the third frame is the sharp one
SHARP = BLUR_SIGMAS.index(0.0)


@pytest.fixture(scope="module")
def part_image() -> np.ndarray:
    return PartRenderer(seed=21, defect_rate=1.0).render().image


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return image.copy() if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigma)


def test_sharpness_ranks_blur(part_image):
    scores = [sharpness(blurred(part_image, sigma)) for sigma in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 2 * scores[1]


def test_http_snapshot_burst_keeps_the_sharpest_and_says_which(part_image):
    jpegs = [encode_jpeg(blurred(part_image, sigma)) for sigma in BLUR_SIGMAS]
    with SimCamera() as sim:
        sim.show_sequence(jpegs)
        camera = HttpSnapshotCamera("snap", sim.url)
        frames = camera.grab_burst(time.monotonic(), 5)
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    chosen = sharpest(frames, 5)
    assert chosen.seq == 3 and chosen.burst.chosen == SHARP and chosen.burst.requested == 5
    assert max(chosen.burst.sharpness) == chosen.burst.sharpness[SHARP]
    assert chosen.image is frames[SHARP].image


def test_a_failing_fetch_ends_the_burst_with_the_frames_already_taken(part_image):
    with SimCamera() as sim:
        sim.show_sequence([encode_jpeg(blurred(part_image, s)) for s in (2.0, 0.0, 1.0)])
        camera = HttpSnapshotCamera("snap", sim.url, timeout_s=0.5)
        first = camera.grab()  # the sequence's first image
        sim.inject("http_error")
        frames = camera.grab_burst(None, 4)  # the first fetch fails: nothing at all
        assert frames == [] and first is not None
        frames = camera.grab_burst(None, 3)
    chosen = sharpest(frames, 3)  # the failed fetch did not advance the scene: sigma 0, 1, 1
    assert len(frames) == 3 and chosen.burst.chosen == 0 and chosen.burst.sharpness[0] > chosen.burst.sharpness[1]


def _blur_folder(tmp_path: Path, image: np.ndarray, cycles: int) -> tuple[Path, np.ndarray]:
    folder = tmp_path / "frames"
    folder.mkdir()
    n = 0
    for _ in range(cycles):
        for sigma in BLUR_SIGMAS:
            cv2.imwrite(str(folder / f"{n:04d}.png"), blurred(image, sigma))
            n += 1
    return folder, cv2.imread(str(folder / f"{SHARP:04d}.png"))


def test_live_burst_starts_at_the_triggers_frame_and_keeps_every_frame_though_the_line_asks_late(tmp_path, part_image):
    folder, sharp = _blur_folder(tmp_path, part_image, cycles=6)
    with LiveSource("cam", folder_opener(folder, fps=30), "folder") as source:
        assert source.next_frame(3.0) is not None
        t = time.monotonic()
        source.expect(t, frames=5)
        time.sleep(0.4)  # the capture thread is busy: 12 newer frames have replaced the newest by now
        frames = source.grab_burst(t, 5)
        stats = source.stats()
    assert len(frames) == 5
    assert frames[0].t_mono >= t and frames[0].t_mono - t < 0.1  # the trigger's own frame first
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 5))  # consecutive, none lost
    chosen = sharpest(frames, 5)
    assert np.array_equal(chosen.image, sharp), "five consecutive frames hold one sharp one: it is chosen"
    assert chosen.seq == frames[chosen.burst.chosen].seq
    assert stats["pending_triggers"] == 0


def test_a_single_frame_reservation_is_extended_into_a_burst(tmp_path, part_image):
    folder, sharp = _blur_folder(tmp_path, part_image, cycles=6)
    with LiveSource("cam", folder_opener(folder, fps=30), "folder") as source:
        assert source.next_frame(3.0) is not None
        t = time.monotonic()
        source.expect(t)  # e.g. the MQTT trigger command reserves one frame
        frames = source.grab_burst(t, 5)
    assert len(frames) == 5 and frames[0].t_mono >= t
    assert np.array_equal(sharpest(frames, 5).image, sharp)


def test_an_offline_camera_gives_no_burst_at_once():
    from agent.ingest.sources import SourceUnavailable

    def never(stop):
        raise SourceUnavailable("unplugged")

    with LiveSource("cam", never, "test") as source:
        time.sleep(0.1)
        started = time.monotonic()
        assert source.grab_burst(time.monotonic(), 3) == []
        assert time.monotonic() - started < 0.1
    assert sharpest([], 3) is None


def test_the_line_inspects_the_sharpest_frame_and_reports_the_burst_in_its_event(part_image):
    images = [blurred(part_image, sigma) for sigma in BLUR_SIGMAS]
    inspected: list[np.ndarray] = []
    events: list[dict] = []

    class Recording:
        last_infer_ms = 0.0

        def detect(self, image, conf_threshold):
            inspected.append(image)
            return []

    class Publisher:
        def publish_event(self, line, event):
            events.append(event)

        def publish_crop(self, *args):
            pass

    with SimCamera() as sim:
        sim.show_sequence([encode_jpeg(image) for image in images])
        camera = HttpSnapshotCamera("snap", sim.url)
        line = InspectionLine("inspect", "box", camera, Recording(), DefectRule(0.5, {}), None, Publisher(),
                              burst_frames=5)
        line.start()
        line.on_trigger(time.monotonic(), "gpio")
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        line.stop()
    (event,) = events
    jsonschema.validate(event, EVENT_SCHEMA)
    burst = event["frame"]["burst"]
    assert burst["requested"] == 5 and burst["chosen"] == SHARP and len(burst["sharpness"]) == 5
    assert event["frame"]["seq"] == SHARP + 1
    (image,) = inspected
    assert sharpness(image) == pytest.approx(max(burst["sharpness"]), rel=1e-3)
