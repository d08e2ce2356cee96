"""The shipped checkout models still meet their targets on renders they have never seen.

Loads the committed FP32 and INT8 IRs through the agent's own engine (``Detector``,
``Classifier``, ``Cascade``; no training) and scores them on CheckoutRenderer seed 19000,
which models/build_checkout.py never uses (detector 11000+/12000/13000, classifier
14000+/15000/16000).
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.events import Detection
from agent.infer.cascade import Cascade
from agent.infer.engine import Classifier, Detector
from hw_sim.checkout_scene import CheckoutRenderer
from hw_sim.products import CATALOG
from models.evaluate import box_iou, mean_average_precision
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DET_DIR = REPO_ROOT / "models" / "checkout-detector"
CLS_DIR = REPO_ROOT / "models" / "checkout-products"
TEST_SEED = 19000
N_DET_SCENES = 200
N_CLS_SCENES = 400
MAP_CONF = 0.001


def _require(folder: Path) -> None:
    for sub in ("fp32", "int8"):
        if not any((folder / sub).glob("*.xml")):
            pytest.fail(f"{folder / sub} has no IR: run .venv/bin/python models/build_checkout.py")


@pytest.fixture(scope="module")
def scenes():
    renderer = CheckoutRenderer(seed=TEST_SEED)
    return [renderer.render() for _ in range(max(N_DET_SCENES, N_CLS_SCENES))]


@pytest.fixture(scope="module")
def detector_map(scenes):
    _require(DET_DIR)
    results = {}
    for name in ("fp32", "int8"):
        detector = Detector(DET_DIR / name, iou_threshold=0.6, max_detections=100)
        assert detector.labels == {0: "product"}
        detections, ground_truth = [], []
        for scene in scenes[:N_DET_SCENES]:
            dets = detector.detect(scene.image, MAP_CONF)
            detections.append((np.array([d.box for d in dets], np.float32).reshape(-1, 4),
                               np.array([d.score for d in dets], np.float32),
                               np.array([d.class_id for d in dets], np.int64)))
            ground_truth.append((np.array([it.box for it in scene.items], np.float32).reshape(-1, 4), None,
                                 np.zeros(len(scene.items), np.int64)))
        results[name] = mean_average_precision(detections, ground_truth, 1, names=("product",))
    return results


@pytest.mark.timeout(120)
def test_detector_int8_map50(detector_map):
    assert detector_map["int8"]["map50"] >= 0.95, detector_map


@pytest.mark.timeout(120)
def test_detector_int8_close_to_fp32(detector_map):
    assert detector_map["int8"]["map50"] >= detector_map["fp32"]["map50"] - 0.01, detector_map


def _crop_accuracy(classifier: Classifier, scenes) -> tuple[float, int]:
    """Top-1 on ground-truth boxes, cropped by the agent's cascade (4 px margin, min 16 px)."""
    cascade = Cascade(classifier)
    correct = total = 0
    for scene in scenes:
        dets = [Detection(0, "product", 1.0, tuple(float(v) for v in it.box)) for it in scene.items]
        for it, d in zip(scene.items, cascade.classify(scene.image, dets)):
            correct += d.classification[0] == it.sku
            total += 1
    return correct / total, total


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_products_top1(scenes, precision):
    _require(CLS_DIR)
    classifier = Classifier(CLS_DIR / precision)
    assert set(classifier.info.names.values()) == {p.sku for p in CATALOG}
    accuracy, total = _crop_accuracy(classifier, scenes[:N_CLS_SCENES])
    assert total >= 500
    assert accuracy >= 0.98, (precision, accuracy, total)


@pytest.mark.timeout(120)
def test_cascade_end_to_end(scenes):
    """INT8 detector boxes -> INT8 classifier: each product found (IoU >= 0.5) and named right."""
    _require(DET_DIR)
    _require(CLS_DIR)
    detector = Detector(DET_DIR / "int8")
    cascade = Cascade(Classifier(CLS_DIR / "int8"))
    named = total = 0
    for scene in scenes[:N_DET_SCENES]:
        dets = cascade.classify(scene.image, detector.detect(scene.image, 0.25))
        boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
        for it in scene.items:
            total += 1
            if not len(boxes):
                continue
            iou = box_iou(np.array([it.box], np.float32), boxes)[0]
            j = int(iou.argmax())
            named += bool(iou[j] >= 0.5 and dets[j].classification[0] == it.sku)
    assert named / total >= 0.97, (named, total)
