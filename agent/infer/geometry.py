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
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        limit = np.array([width, height, width, height], np.float32)
        return np.clip((np.asarray(boxes, np.float32) - pad) / np.float32(self.scale), 0, limit)


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


CROP_MODES = ("box", "context")


@dataclass(frozen=True)
class CropPolicy:
    """How a detection is cut from the source frame for a second-stage classifier.

    A property of the classifier model, read from the ``crop`` mapping of its metadata.yaml
    (``CropPolicy.from_metadata``), so the agent cuts crops exactly as the model was trained on:

    - ``box`` (the default, and what a model without ``crop`` gets): the box grown by ``margin``
      px, at least ``min_size`` px, then stretched to the model input. Absolute size is lost.
    - ``context``: a fixed ``size`` x ``size`` window of source pixels centred on the box
      (moved inside the frame; padded with 114 only where the frame is smaller than the window),
      so the model sees the object at one known pixel scale (input side / ``size``): it can
      measure it. For classes set by physical size (defect severity) on a fixed camera.
    """

    mode: str = "box"
    margin: int = 4  # box: px added on every side
    min_size: int = 16  # box: smallest crop side, px
    size: int = 0  # context: window side, source px

    def __post_init__(self):
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {', '.join(CROP_MODES)}, not {self.mode!r}")
        if self.mode == "context" and not 8 <= self.size <= 4096:
            raise ValueError(f"crop mode context needs size (the window side in source px, 8..4096), got {self.size!r}")
        if not 0 <= self.margin <= 512 or not 1 <= self.min_size <= 4096:
            raise ValueError(f"crop margin must be 0..512 and min_size 1..4096, got {self.margin!r}, {self.min_size!r}")

    @classmethod
    def from_metadata(cls, metadata: dict, default: CropPolicy | None = None) -> CropPolicy:
        """The policy in metadata["crop"], or `default` (else the box default) when there is none.

        Raises ValueError with the reason for a malformed entry (the caller names the file)."""
        spec = metadata.get("crop")
        if spec is None:
            return default or cls()
        if not isinstance(spec, dict):
            raise ValueError(f"crop must be a mapping like {{mode: context, size: 96}}, not {spec!r}")
        unknown = set(spec) - {"mode", "margin", "min_size", "size"}
        if unknown:
            raise ValueError(f"crop has unknown keys {sorted(unknown)} (known: mode, margin, min_size, size)")
        values = {}
        for key in ("margin", "min_size", "size"):
            if key in spec:
                if isinstance(spec[key], bool) or not isinstance(spec[key], int):
                    raise ValueError(f"crop {key} must be an integer number of pixels, not {spec[key]!r}")
                values[key] = spec[key]
        return cls(mode=str(spec.get("mode", "box")), **values)

    def as_metadata(self) -> dict:
        if self.mode == "context":
            return {"mode": "context", "size": self.size}
        return {"mode": "box", "margin": self.margin, "min_size": self.min_size}

    def window(self, box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
        """The crop window in frame pixels, inside the frame (x1 < x2 <= width, y1 < y2 <= height)."""
        if self.mode == "box":
            return crop_box(box, width, height, self.margin, self.min_size)
        return crop_box(_centred(box, self.size), width, height, 0, 1)

    def cut(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The crop of `image` for `box`. In context mode always size x size (padded if the frame is smaller)."""
        height, width = image.shape[:2]
        x1, y1, x2, y2 = self.window(box, width, height)
        crop = image[y1:y2, x1:x2]
        if self.mode == "context" and crop.shape[:2] != (self.size, self.size):
            pad_y, pad_x = self.size - crop.shape[0], self.size - crop.shape[1]
            border = (PAD_VALUE,) * (crop.shape[2] if crop.ndim == 3 else 1)
            crop = cv2.copyMakeBorder(crop, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2,
                                      cv2.BORDER_CONSTANT, value=border)
        return crop


def _centred(box: tuple[float, float, float, float], size: int) -> tuple[float, float, float, float]:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2
