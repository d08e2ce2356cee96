"""The golden-set check: a staged model must reproduce what it did when the bundle was built.

The bundle builder ran each model through the agent's own engine on the bundle's golden
images (lossless PNG) and recorded the results in the signed manifest. On the device the
staged model, compiled for this device, runs on the same images and must give:

- detectors: for every expected detection, one of the same label with IoU >= `min_iou` and a
  score within `score_tolerance`; and nothing else scoring at or over the recording
  threshold + `score_tolerance` (borderline scores may come and go);
- classifiers: the same top-1 label, its probability within `score_tolerance`;
- and a median detect/classify time per image within `latency_budget_ms`, measured after one
  warm-up run that compiles the model.

A wrong IR, a broken conversion, a plugin that computes differently or a model far too slow
for the line fails here, before anything is activated.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .manifest import GoldenCase, ModelEntry


@dataclass(frozen=True)
class GoldenSettings:
    min_iou: float = 0.85
    score_tolerance: float = 0.05
    latency_budget_ms: float = 250.0


@dataclass
class GoldenReport:
    model: str
    cases: int
    failures: list[str] = field(default_factory=list)
    latency_ms_p50: float = 0.0
    latency_ms_max: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict:
        return {"model": self.model, "cases": self.cases, "passed": self.passed, "failures": self.failures[:5],
                "latency_ms_p50": round(self.latency_ms_p50, 2), "latency_ms_max": round(self.latency_ms_max, 2)}


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path.name} is not a readable image")
    return image


def check_model(name: str, runner, entry: ModelEntry, slot_path: Path, settings: GoldenSettings) -> GoldenReport:
    """runner: an agent.infer.engine Detector or Classifier built from the staged model."""
    report = GoldenReport(name, len(entry.golden))
    is_detector = hasattr(runner, "detect")
    tolerance = settings.score_tolerance
    try:
        images = [_read(slot_path / case.image) for case in entry.golden]
    except ValueError as exc:
        report.failures.append(str(exc))
        return report

    def run(image):
        if is_detector:
            return runner.detect(image, max(0.01, entry.threshold - tolerance))
        return runner.classify([image], k=1)[0]

    run(images[0])  # compiles for this size: not part of the latency figure
    times = []
    for index, (case, image) in enumerate(zip(entry.golden, images)):
        started = time.perf_counter()
        try:
            output = run(image)
        except (RuntimeError, ValueError) as exc:
            report.failures.append(f"case {index} ({case.image}): inference failed: {exc}")
            continue
        times.append((time.perf_counter() - started) * 1000)
        problems = (_compare_detections(case, output, entry.threshold, settings) if is_detector
                    else _compare_top(case, output, tolerance))
        report.failures.extend(f"case {index} ({Path(case.image).name}): {p}" for p in problems)
    if times:
        report.latency_ms_p50, report.latency_ms_max = statistics.median(times), max(times)
        if report.latency_ms_p50 > settings.latency_budget_ms:
            report.failures.append(f"median latency {report.latency_ms_p50:.1f} ms is over the budget of "
                                   f"{settings.latency_budget_ms:g} ms")
    return report


def _compare_detections(case: GoldenCase, found: list, threshold: float, settings: GoldenSettings) -> list[str]:
    problems = []
    unmatched = list(found)
    for expected in sorted(case.detections or [], key=lambda d: -d.score):
        same = [d for d in unmatched if d.label == expected.label]
        if not same:
            problems.append(f"expected {expected.label} {expected.score:.2f} not found")
            continue
        ious = _iou(np.array(expected.box, np.float32), np.array([d.box for d in same], np.float32))
        best = int(np.argmax(ious))
        match, iou = same[best], float(ious[best])
        if iou < settings.min_iou or abs(match.score - expected.score) > settings.score_tolerance:
            problems.append(f"expected {expected.label} {expected.score:.2f}, nearest has IoU {iou:.2f} and "
                            f"score {match.score:.2f}")
            continue
        unmatched.remove(match)
    for extra in unmatched:
        if extra.score >= threshold + settings.score_tolerance:
            problems.append(f"unexpected {extra.label} {extra.score:.2f} at "
                            f"[{', '.join(f'{v:.0f}' for v in extra.box)}]")
    return problems


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1,y1,x2,y2 box with each row of boxes."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _compare_top(case: GoldenCase, top: list[tuple[str, float]], tolerance: float) -> list[str]:
    label, probability = top[0]
    want_label, want_probability = case.top
    if label != want_label or abs(probability - want_probability) > tolerance:
        return [f"expected top-1 {want_label} {want_probability:.2f}, got {label} {probability:.2f}"]
    return []
