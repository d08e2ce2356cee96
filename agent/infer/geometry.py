"""Letterboxing and box geometry: pure numpy/cv2, no model code."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey, so users' YOLO models see what they were trained on


@dataclass(frozen=True)
class Letterbox:
    """How a source frame is scaled and padded into the model input (centred, Ultralytics style)."""

    scale: float
    pad_x: int  # left
    pad_y: int  # top
    new_w: int = 0  # the scaled frame inside the padding
    new_h: int = 0
    dst_w: int = 0
    dst_h: int = 0

    @classmethod
    def fit(cls, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> Letterbox:
        height, width = source_hw
        target_h, target_w = target_hw
        scale = min(target_h / height, target_w / width)
        new_w, new_h = round(width * scale), round(height * scale)
        left = round((target_w - new_w) / 2 - 0.1)
        top = round((target_h - new_h) / 2 - 0.1)
        return cls(scale, left, top, new_w, new_h, target_w, target_h)

    @property
    def pad_right(self) -> int:
        return self.dst_w - self.new_w - self.pad_x

    @property
    def pad_bottom(self) -> int:
        return self.dst_h - self.new_h - self.pad_y

    def to_source(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map xyxy boxes from model-input pixels back to source pixels, clipped to the frame."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to `size` (height, width), centred, with cv2.

    The agent does this inside the OpenVINO graph; this CPU version serves tools and tests.
    """
    box = Letterbox.fit(image.shape[:2], size)
    resized = image if (box.new_h, box.new_w) == image.shape[:2] else cv2.resize(
        image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(resized, box.pad_y, box.pad_bottom, box.pad_x, box.pad_right,
                             cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return out, box


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
