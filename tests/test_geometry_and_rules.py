"""Pure logic: letterbox mapping, crop windows, NMS and YOLOv8 decoding, the reject rule."""

from __future__ import annotations

import numpy as np
import pytest

from agent.events import Detection, Outcome
from agent.infer.geometry import crop_box, letterbox
from agent.infer.nms import decode_yolov8, nms
from agent.postprocess.inspection_rule import DefectRule


def test_letterbox_round_trip():
    image = np.zeros((480, 640, 3), np.uint8)
    out, box = letterbox(image, (320, 320))
    assert out.shape == (320, 320, 3)
    assert box.scale == 0.5 and box.pad_x == 0 and box.pad_y == 40
    assert (out[:40] == 114).all() and (out[280:] == 114).all()
    source = box.to_source(np.array([[50.0, 60.0, 150.0, 140.0]]), 640, 480)
    np.testing.assert_allclose(source, [[100, 40, 300, 200]])


def test_letterbox_clips_to_frame():
    _, box = letterbox(np.zeros((480, 640, 3), np.uint8), (320, 320))
    source = box.to_source(np.array([[-10.0, 0.0, 400.0, 330.0]]), 640, 480)
    np.testing.assert_allclose(source, [[0, 0, 640, 480]])


@pytest.mark.parametrize(
    "box, margin, min_size, expected",
    [
        ((100, 100, 140, 120), 0, 1, (100, 100, 140, 120)),
        ((100, 100, 140, 120), 8, 1, (92, 92, 148, 128)),
        ((100, 100, 110, 104), 0, 32, (89, 86, 121, 118)),  # grown to the minimum, centred
        ((0, 0, 10, 10), 8, 32, (0, 0, 32, 32)),  # shifted inside at the top-left corner
        ((630, 470, 640, 480), 8, 32, (608, 448, 640, 480)),  # and at the bottom-right
        ((-50, -50, 700, 500), 0, 1, (0, 0, 640, 480)),  # never larger than the frame
    ],
)
def test_crop_box(box, margin, min_size, expected):
    assert crop_box(box, 640, 480, margin, min_size) == expected


def test_crop_box_always_non_empty_and_inside():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        x1, y1 = rng.uniform(-100, 700, 2)
        box = (x1, y1, x1 + rng.uniform(0, 300), y1 + rng.uniform(0, 300))
        left, top, right, bottom = crop_box(box, 640, 480, int(rng.integers(0, 20)), int(rng.integers(1, 100)))
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 480


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = nms(boxes, scores, classes, iou_threshold=0.5, max_detections=10)
    assert keep.tolist() == [0, 2, 3]  # box 1 overlaps box 0 of its class; box 2 is another class
    assert nms(boxes, scores, classes, 0.5, max_detections=2).tolist() == [0, 2]
    assert nms(np.empty((0, 4)), np.empty(0), np.empty(0), 0.5, 10).size == 0


def _reference_nms(boxes, scores, classes, iou_threshold, max_detections):
    """The textbook greedy loop, one pair at a time."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / max(union, 1e-9)

    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if len(keep) < max_detections and all(
                classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= iou_threshold for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_the_textbook_loop_on_random_boxes():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (n, 2))], axis=1).astype(np.float32)
        scores = rng.permutation(n).astype(np.float32) / n  # distinct, so the order is unique
        classes = rng.integers(0, 3, n)
        limit = int(rng.integers(1, 30))
        assert nms(boxes, scores, classes, 0.45, limit).tolist() == _reference_nms(boxes, scores, classes, 0.45, limit)


@pytest.mark.parametrize("classes", [1, 3])
def test_decode_yolov8_matches_the_textbook_decode(classes):
    """The one-class and many-class paths: each anchor's best class, threshold, corners, NMS."""
    rng = np.random.default_rng(classes)
    for _ in range(100):
        anchors = int(rng.integers(1, 300))
        centre = rng.uniform(0, 320, (2, anchors))
        size = rng.uniform(4, 60, (2, anchors))
        scores = rng.permutation(anchors * classes).reshape(classes, anchors) / (anchors * classes)
        output = np.concatenate([centre, size, scores])[None].astype(np.float32)
        boxes, got_scores, class_ids = decode_yolov8(output, 0.6, 0.45, 20)
        best, best_class = scores.max(axis=0), scores.argmax(axis=0)
        kept = [a for a in range(anchors) if best[a] >= 0.6]
        corners = [[centre[0, a] - size[0, a] / 2, centre[1, a] - size[1, a] / 2,
                    centre[0, a] + size[0, a] / 2, centre[1, a] + size[1, a] / 2] for a in kept]
        chosen = [kept[i] for i in _reference_nms(corners, best[kept], best_class[kept], 0.45, 20)]
        assert class_ids.tolist() == best_class[chosen].tolist()
        np.testing.assert_allclose(got_scores, best[chosen], rtol=1e-6)
        np.testing.assert_allclose(boxes, np.array(corners).reshape(-1, 4)[[kept.index(a) for a in chosen]],
                                   rtol=1e-5, atol=1e-4)


def test_decode_yolov8_layout():
    # two anchors, two classes: [1, 4 + 2, 2]
    output = np.array([[[100, 10], [50, 10], [20, 4], [10, 4], [0.1, 0.2], [0.9, 0.01]]], np.float32)
    boxes, scores, class_ids = decode_yolov8(output, conf_threshold=0.5)
    np.testing.assert_allclose(boxes, [[90, 45, 110, 55]])
    assert scores.tolist() == pytest.approx([0.9]) and class_ids.tolist() == [1]
    with pytest.raises(ValueError, match=r"\[1, 4\+classes, anchors\]"):
        decode_yolov8(np.zeros((1, 3, 7), np.float32), 0.5)


def _det(label: str, score: float) -> Detection:
    return Detection(0, label, score, (0, 0, 10, 10))


def test_rule_rejects_any_defect_over_its_threshold():
    rule = DefectRule(default_threshold=0.5, thresholds={"stain": 0.8})
    assert rule.judge([]).outcome is Outcome.PASS
    assert rule.judge([_det("scratch", 0.49), _det("stain", 0.79)]).outcome is Outcome.PASS
    verdict = rule.judge([_det("scratch", 0.5), _det("stain", 0.79)])
    assert verdict.outcome is Outcome.REJECT and [d.label for d in verdict.defects] == ["scratch"]
    assert rule.judge([_det("stain", 0.8)]).outcome is Outcome.REJECT
    assert rule.lowest_threshold == 0.5


def test_no_read_rejects():
    verdict = DefectRule.no_read("camera timeout")
    assert verdict.outcome is Outcome.NO_READ and verdict.outcome.rejects
    assert not Outcome.PASS.rejects


def test_rule_with_severities_rejects_only_listed_ones():
    rule = DefectRule(0.5, reject_severities=frozenset({"critical", "major"}))
    minor = Detection(0, "scratch", 0.9, (0, 0, 10, 10), classification=("minor", 0.97))
    major = Detection(1, "dent", 0.6, (0, 0, 10, 10), classification=("major", 0.8))
    unclassified = Detection(2, "stain", 0.7, (0, 0, 10, 10))
    verdict = rule.judge([minor])
    assert verdict.outcome is Outcome.PASS and verdict.defects == (minor,)  # reported, not rejected
    assert rule.judge([minor, major]).outcome is Outcome.REJECT
    assert rule.judge([unclassified]).outcome is Outcome.REJECT  # no severity: fail safe
    low = Detection(1, "dent", 0.4, (0, 0, 10, 10), classification=("critical", 0.99))
    assert rule.judge([low]).outcome is Outcome.PASS  # under the score threshold
