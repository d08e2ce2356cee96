"""The shipped defect-severity classifier still meets its target on renders it has never seen.

Loads the committed FP32 and INT8 IRs through the agent's own ``Classifier`` and
``Cascade`` (crops as the model's metadata.yaml says: a fixed window of source pixels
centred on the box; no training) and scores them on PartRenderer seed 29000, which
models/build_severity.py never uses (training 21000+, calibration 22000, evaluation 23000).

Under the simulator's grading spec (the default renderer: a tolerance band between grades,
hw_sim.scene.GRADE_TOLERANCE) the target is top-1 >= 98 %. Without the band, defects drawn
right at a boundary are ambiguous by construction; a floor guards that level too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.events import Detection
from agent.infer.cascade import Cascade
from agent.infer.engine import Classifier
from hw_sim.scene import SEVERITIES, PartRenderer

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "models" / "inspection-severity"
TEST_SEED = 29000
N_PARTS = 400  # every render carries 1-3 defects: about 600 crops


def _top1(parts) -> dict:
    for sub in ("fp32", "int8"):
        if not any((MODEL_DIR / sub).glob("*.xml")):
            pytest.fail(f"{MODEL_DIR / sub} has no IR: run .venv/bin/python models/build_severity.py")
    results = {}
    for name in ("fp32", "int8"):
        classifier = Classifier(MODEL_DIR / name)
        assert list(classifier.info.names.values()) == list(SEVERITIES)
        cascade = Cascade(classifier)
        assert cascade.crop.mode == "context"
        correct = total = 0
        for part in parts:
            dets = [Detection(0, d.kind, 1.0, tuple(float(v) for v in d.box)) for d in part.defects]
            for d, out in zip(part.defects, cascade.classify(part.image, dets)):
                correct += out.classification[0] == d.severity
                total += 1
        results[name] = (correct / total, total)
    print(f"severity top-1 on seed {TEST_SEED}: " + ", ".join(f"{k} {v[0]:.4f} of {v[1]}" for k, v in results.items()))
    return results


@pytest.fixture(scope="module")
def accuracy():
    renderer = PartRenderer(seed=TEST_SEED, defect_rate=1.0)  # the grading spec, with its tolerance band
    return _top1([renderer.render() for _ in range(N_PARTS)])


@pytest.fixture(scope="module")
def accuracy_without_band():
    renderer = PartRenderer(seed=TEST_SEED, defect_rate=1.0, grade_tolerance=0.0)
    return _top1([renderer.render() for _ in range(N_PARTS)])


def _assert_top1(result, precision: str, floor: float) -> None:
    top1, total = result[precision]
    assert total >= 400
    assert top1 >= floor, (precision, top1, total)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_severity_top1_target(accuracy, precision):
    _assert_top1(accuracy, precision, 0.98)


@pytest.mark.timeout(120)
def test_int8_close_to_fp32(accuracy):
    assert accuracy["int8"][0] >= accuracy["fp32"][0] - 0.01, accuracy


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_severity_without_band_no_regression(accuracy_without_band, precision):
    """Borderline defects included: the shipped model measures ~0.97 (0.974 on the evaluation seed)."""
    _assert_top1(accuracy_without_band, precision, 0.95)
