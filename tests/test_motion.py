"""Motion on the simulator's scenes: parts entering trigger; noise, flicker and the moving
empty belt do not; masks, minimum area and cooldown work; without motion nothing runs."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from agent.ingest.motion import MotionDetector, MotionSettings, MotionTrigger
from agent.ingest.sources import LiveSource, folder_opener
from hw_sim.scene import PartRenderer


@pytest.fixture(scope="module")
def scenes():
    """The simulator's renders at its configured lighting jitter and sensor noise."""
    renderer = PartRenderer(seed=11)
    empty = [renderer.render_empty_belt() for _ in range(40)]
    parts = [renderer.render().image for _ in range(12)]
    return empty, parts


def flicker(image: np.ndarray, gain: float, noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float32) * gain + rng.normal(0, noise_sigma, image.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run(detector: MotionDetector, frames) -> list:
    return [detector.detect(frame) for frame in frames]


def test_empty_belt_with_the_simulators_noise_and_lighting_jitter_is_not_motion(scenes):
    empty, _ = scenes
    detector = MotionDetector()
    assert not any(run(detector, empty))
    assert detector.lighting_resets == 0


def test_mains_flicker_and_heavier_noise_are_not_motion(scenes):
    empty, _ = scenes
    rng = np.random.default_rng(0)
    # 100 Hz lamp flicker sampled at 15 fps: the gain wanders by +-15%, on top of the render's own.
    frames = [flicker(image, 1 + 0.15 * np.sin(2 * np.pi * 100 / 15 * i), 10.0, rng) for i, image in enumerate(empty)]
    assert not any(run(MotionDetector(), frames))


def test_a_sudden_lighting_step_is_not_motion(scenes):
    empty, _ = scenes
    frames = empty[:10] + [cv2.convertScaleAbs(image, alpha=1.4, beta=10) for image in empty[10:20]]
    assert not any(run(MotionDetector(), frames))


def test_each_part_entering_is_motion(scenes):
    empty, parts = scenes
    detector = MotionDetector()
    run(detector, empty[:5])
    for i, part in enumerate(parts):
        motion = detector.detect(part)
        assert motion is not None, f"part {i} not seen (changed area {detector.last_area:.3f})"
        x1, y1, x2, y2 = motion.box
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and motion.area > 0.05
        run(detector, empty[5 + i: 8 + i])  # the part moves on; the belt is empty again


def test_a_mask_over_the_belt_ignores_parts(scenes):
    empty, parts = scenes
    belt = [[0, 30], [640, 30], [640, 450], [0, 450]]
    detector = MotionDetector(MotionSettings(mask=(belt,)))
    run(detector, empty[:5])
    assert detector.detect(parts[0]) is None


def test_min_area_separates_a_small_change_from_a_part(scenes):
    empty, _ = scenes
    small = empty[6].copy()
    cv2.rectangle(small, (300, 200), (330, 230), (220, 220, 220), -1)  # 0.3% of the picture
    large = empty[6].copy()
    cv2.rectangle(large, (250, 150), (390, 330), (220, 220, 220), -1)  # 8%
    detector = MotionDetector(MotionSettings(min_area=0.01))
    run(detector, empty[:5])
    assert detector.detect(small) is None
    detector = MotionDetector(MotionSettings(min_area=0.01))
    run(detector, empty[:5])
    assert detector.detect(large) is not None


def test_sensitivity_threshold(scenes):
    empty, _ = scenes
    faint = empty[6].copy()
    faint[150:330, 250:390] = cv2.add(faint[150:330, 250:390], np.full((180, 140, 3), 18, np.uint8))
    for threshold, seen in ((10, True), (40, False)):
        detector = MotionDetector(MotionSettings(threshold=threshold))
        run(detector, empty[:5])
        assert (detector.detect(faint) is not None) is seen


def test_detection_is_cheap(scenes):
    empty, parts = scenes
    detector = MotionDetector()
    frames = (empty + parts) * 3
    start = time.perf_counter()
    run(detector, frames)
    per_frame_ms = (time.perf_counter() - start) * 1000 / len(frames)
    assert per_frame_ms < 5.0  # the benchmark measures ~0.3 ms; this only catches a gross regression


def test_motion_trigger_on_a_live_source_fires_once_per_part_and_never_on_the_empty_belt(tmp_path, scenes):
    """hw_sim frames played as a 15 fps camera: 3 parts, each in view for 5 frames, 8 apart."""
    empty, parts = scenes
    folder = tmp_path / "frames"
    folder.mkdir()
    sequence = empty[:10]
    for n in range(3):
        sequence += [parts[n]] * 5 + empty[10 + 8 * n: 18 + 8 * n]
    for i, image in enumerate(sequence):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    fires: list[float] = []

    with LiveSource("cam0", folder_opener(folder, fps=15, loop=False), "folder") as source:
        trigger = MotionTrigger(source, MotionDetector(), fires.append, cooldown_s=0.2)
        deadline = time.monotonic() + 10
        while source.stats()["state"] != "ended" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        trigger.close()
        stats = trigger.stats()
    assert len(fires) == 3, stats  # the detector behind it ran 3 times, never on the empty belt
    assert stats["fires"] == 3 and stats["frames"] >= len(sequence) // 2
    assert stats["motion_frames"] >= 3


class Feed:
    """A camera stand-in that hands the trigger a fixed list of frames, then nothing."""

    name = "feed"

    def __init__(self, images, period_s: float):
        from agent.events import Frame

        start = time.monotonic()
        self._frames = [Frame("feed", i + 1, image, start + i * period_s, time.time()) for i, image in enumerate(images)]

    def next_frame(self, timeout_s):
        if self._frames:
            return self._frames.pop(0)
        time.sleep(min(timeout_s, 0.05))
        return None


def test_cooldown_limits_fires_while_starts_keep_coming(scenes):
    empty, parts = scenes
    images = empty[:4]
    for n in range(6):  # a new part every 4 frames (0.2 s at 20 fps)
        images += [parts[n]] + empty[4 + 3 * n: 7 + 3 * n]
    for cooldown_s, expected in ((0.0, 6), (0.5, 2)):
        fires: list[float] = []
        trigger = MotionTrigger(Feed(images, 0.05), MotionDetector(), fires.append, cooldown_s=cooldown_s)
        time.sleep(0.5)
        trigger.close()
        assert len(fires) == expected, trigger.stats()
        assert trigger.stats()["cooldown_suppressed"] == 6 - expected


def test_repeat_fires_again_while_motion_goes_on_without_a_still_frame(scenes):
    """A different part in every frame for 1.2 s (a hand that keeps moving): one start, so one fire;
    with repeat_s 0.4 it fires again every 0.4 s while the motion lasts, and not after it. (A fast
    background, so the last part's ghost fades within a few frames.)"""
    empty, parts = scenes
    images = empty[:4] + [parts[i % len(parts)] for i in range(24)] + empty[4:24]
    for repeat_s in (None, 0.4):
        fires: list[float] = []
        trigger = MotionTrigger(Feed(images, 0.05), MotionDetector(MotionSettings(background_alpha=0.5)), fires.append,
                                cooldown_s=0.2, repeat_s=repeat_s)
        time.sleep(2.8)
        trigger.close()
        stats = trigger.stats()
        assert 24 <= stats["motion_frames"] <= 28, stats
        if repeat_s is None:
            assert len(fires) == 1 and stats["repeats"] == 0, stats
        else:  # 0, 0.4-0.45, 0.8-0.9, maybe 1.2-1.35 s into 1.2-1.4 s of motion
            assert 3 <= len(fires) <= 4 and stats["repeats"] == len(fires) - 1, stats
            assert all(b - a >= repeat_s - 1e-6 for a, b in zip(fires, fires[1:]))
            assert fires[-1] - fires[0] < 0.05 * stats["motion_frames"]
