"""Model adapters: what a model's input wants and how its output is read. Pure numpy.

  yolov8      [1, 4 + classes, anchors]   `yolo export format=openvino`, and our own detectors
  ssd         [1, 1, N, 7]                Open Model Zoo DetectionOutput
  classifier  [1, classes]                logits or probabilities
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nms import decode_yolov8


@dataclass(frozen=True)
class InputSpec:
    """How a u8 BGR frame becomes the model's input (run inside the graph)."""

    resize: str  # "letterbox" (keep aspect, pad) or "stretch"
    rgb: bool  # convert BGR -> RGB
    scale: float | None  # divide by this (255 for [0, 1] inputs); None keeps 0..255
    pad_value: float = 114.0


ADAPTER_SHAPES = {
    "yolov8": "[1, 4+classes, anchors]",
    "ssd": "[1, 1, N, 7]",
    "classifier": "[1, classes]",
}

INPUT_SPECS = {
    "yolov8": InputSpec(resize="letterbox", rgb=True, scale=255.0),
    "ssd": InputSpec(resize="stretch", rgb=False, scale=None),  # OMZ models take BGR 0..255
    "classifier": InputSpec(resize="stretch", rgb=True, scale=255.0),
}


def choose_adapter(output_shapes: list[list[int]], task: str | None = None) -> str | None:
    """The adapter for these (static) output shapes, or None. metadata.yaml's task decides ties."""
    if not output_shapes:
        return None
    shape = output_shapes[0]
    if task == "classify" and len(shape) == 2:
        return "classifier"
    if len(shape) == 3 and shape[1] >= 5:
        return "yolov8"
    if len(shape) == 4 and shape[1] == 1 and shape[3] == 7:
        return "ssd"
    if len(shape) == 2 and shape[1] >= 2:
        return "classifier"
    return None


def decode_ssd(output: np.ndarray, conf_threshold: float, max_detections: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[1, 1, N, 7] rows (image_id, label, conf, x1, y1, x2, y2) with normalised corners.

    Returns boxes normalised to [0, 1], scores and class ids; rows after image_id -1 are padding.
    """
    rows = output.reshape(-1, 7)
    valid = rows[:, 0] >= 0
    rows = rows[valid & (rows[:, 2] >= conf_threshold)]
    rows = rows[np.argsort(-rows[:, 2], kind="stable")][:max_detections]
    return rows[:, 3:7].clip(0, 1), rows[:, 2], rows[:, 1].astype(np.int64)


def decode_yolo_batch(output: np.ndarray, conf: float, iou: float, max_det: int):
    return [decode_yolov8(output[i : i + 1], conf, iou, max_det) for i in range(output.shape[0])]


def to_probabilities(output: np.ndarray) -> np.ndarray:
    """Rows of class scores as probabilities: kept if they already are, softmax otherwise."""
    output = output.astype(np.float32).reshape(output.shape[0], -1)
    sums = output.sum(axis=1)
    if (output >= 0).all() and (output <= 1).all() and np.allclose(sums, 1.0, atol=1e-3):
        return output
    shifted = output - output.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(int(c), float(row[c])) for c in idx] for row, idx in zip(probabilities, order)]
