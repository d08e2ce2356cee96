"""Decoding of YOLOv8-layout outputs and class-aware non-maximum suppression (numpy)."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against many."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Greedy class-aware NMS. Returns kept indices, best score first.

    Boxes of different classes never suppress each other: each class is offset into its own
    coordinate range, so one pass handles all classes (the trick torchvision's batched_nms uses).
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    offset = (boxes.max() + 1.0) * class_ids.astype(np.float32)
    shifted = boxes + offset[:, None]
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_detections:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


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
    preds = output[0].T  # anchors x (4 + classes)
    class_scores = preds[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(preds)), class_ids]
    mask = scores >= conf_threshold
    if not mask.any():
        return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
    xywh, scores, class_ids = preds[mask, :4], scores[mask], class_ids[mask]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    keep = nms(boxes, scores, class_ids, iou_threshold, max_detections)
    return boxes[keep], scores[keep], class_ids[keep]
