"""Letterboxing and box geometry: pure numpy/cv2, no model code."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey, so users' YOLO models see what they were trained on


@dataclass(frozen=True)
class Letterbox:
    """How a source frame was scaled and padded into the model input."""

    scale: float
    pad_x: float
    pad_y: float

    def to_source(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map xyxy boxes from model-input pixels back to source pixels, clipped to the frame."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to `size` (height, width), centred."""
    height, width = image.shape[:2]
    target_h, target_w = size
    scale = min(target_h / height, target_w / width)
    new_w, new_h = round(width * scale), round(height * scale)
    pad_x, pad_y = (target_w - new_w) / 2, (target_h - new_h) / 2
    resized = image if (new_w, new_h) == (width, height) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    out = cv2.copyMakeBorder(
        resized, top, target_h - new_h - top, left, target_w - new_w - left,
        cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    return out, Letterbox(scale=scale, pad_x=left, pad_y=top)


def crop_box(
    box: tuple[float, float, float, float], width: int, height: int, margin: int = 0, min_size: int = 1
) -> tuple[int, int, int, int]:
    """An integer crop window around `box`: grown by `margin`, at least `min_size` square where
    the frame allows, and always inside the frame (x1 < x2 <= width, y1 < y2 <= height)."""
    x1, y1, x2, y2 = box
    x1, y1, x2, y2 = x1 - margin, y1 - margin, x2 + margin, y2 + margin
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w = min(max(x2 - x1, min_size), width)
    h = min(max(y2 - y1, min_size), height)
    left = int(round(min(max(cx - w / 2, 0), width - w)))
    top = int(round(min(max(cy - h / 2, 0), height - h)))
    right = min(width, left + max(1, int(round(w))))
    bottom = min(height, top + max(1, int(round(h))))
    return left, top, right, bottom
