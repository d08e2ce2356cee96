"""Decoding of YOLOv8-layout outputs and class-aware non-maximum suppression (numpy)."""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Greedy class-aware NMS. Returns kept indices, best score first.

    Boxes of different classes never suppress each other: each class is offset into its own
    coordinate range, so one pass handles all classes (the trick torchvision's batched_nms uses).
    The pairwise IoU matrix is computed in one vectorised step; the greedy pass then only reads
    rows of it. Candidates are few after the confidence threshold, so n x n stays small.
    """
    if len(boxes) < 2:  # nothing to suppress
        return np.zeros(min(len(boxes), max_detections), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    shifted = boxes[order]
    if class_ids.min() != class_ids.max():
        shifted = shifted + ((boxes.max() + 1.0) * class_ids[order].astype(np.float32))[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = (x2 - x1) * (y2 - y1)
    inter = (np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
             * np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None))
    overlaps = inter / np.maximum(areas[:, None] + areas - inter, 1e-9) > iou_threshold
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_detections:
            break
        suppressed |= overlaps[i]
    return order[np.asarray(keep, dtype=np.int64)]


def decode_yolov8(
    output: np.ndarray,
    conf_threshold: float,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a YOLOv8/YOLO11 detect output [1, 4 + classes, anchors] (cx, cy, w, h in input
    pixels, then per-class scores) into (boxes xyxy, scores, class_ids) after NMS."""
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        raise ValueError(f"expected a [1, 4+classes, anchors] output, got {list(output.shape)}")
    # Threshold in the model's own [classes, anchors] layout first: most anchors are background,
    # and only the few candidates left are gathered (one indexing step) and decoded. This runs
    # once per frame on the inference callback, so it is kept to a handful of numpy calls.
    rows = output[0]
    class_scores = rows[4:]
    scores = class_scores[0] if len(class_scores) == 1 else class_scores.max(axis=0)
    candidates = np.flatnonzero(scores >= conf_threshold)
    if candidates.size == 0:
        return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
    picked = rows[:, candidates]  # [4 + classes, n]
    scores = scores[candidates]
    class_ids = picked[4:].argmax(axis=0)
    centre, half = picked[:2], picked[2:4] * np.float32(0.5)
    boxes = np.concatenate([centre - half, centre + half]).T.astype(np.float32, copy=False)  # [n, 4] xyxy
    keep = nms(boxes, scores, class_ids, iou_threshold, max_detections)
    return boxes[keep], scores[keep], class_ids[keep]
