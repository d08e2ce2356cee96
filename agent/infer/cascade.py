"""Detect -> classify: the detector's boxes are cropped from the full-resolution source frame
and classified in one batch."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..events import Detection
from .engine import Classifier
from .geometry import crop_box


class Cascade:
    def __init__(self, classifier: Classifier, margin_px: int = 4, min_size_px: int = 16):
        self.classifier = classifier
        self.margin_px = margin_px
        self.min_size_px = min_size_px

    def classify(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The same detections, each with `classification` = (top label, probability)."""
        if not detections:
            return []
        height, width = image.shape[:2]
        crops = []
        for d in detections:
            x1, y1, x2, y2 = crop_box(d.box, width, height, self.margin_px, self.min_size_px)
            crops.append(image[y1:y2, x1:x2])
        results = self.classifier.classify(crops, k=1)
        return [dataclasses.replace(d, classification=r[0]) for d, r in zip(detections, results)]
