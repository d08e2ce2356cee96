"""Detect -> classify: the detector's boxes are cropped from the full-resolution source frame
and classified in one batch.

How a box is cut is a property of the classifier model (``crop`` in its metadata.yaml, see
``geometry.CropPolicy``), so crops are always cut the way the model was trained on: the
shipped severity model wants a fixed window at one pixel scale, a user's classifier without
``crop`` gets the box with a margin."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..events import Detection
from .engine import Classifier, ModelInfo, ModelLoadError
from .geometry import CropPolicy


def crop_policy(info: ModelInfo, default: CropPolicy | None = None) -> CropPolicy:
    """The model's crop policy from its metadata.yaml, or `default` when it names none.

    A malformed ``crop`` entry is a ModelLoadError naming the file, raised when the line is
    built, before it runs."""
    try:
        return CropPolicy.from_metadata(info.metadata, default)
    except ValueError as exc:
        raise ModelLoadError(f"{info.path.parent / 'metadata.yaml'}: {exc}") from None


class Cascade:
    def __init__(self, classifier: Classifier, margin_px: int = 4, min_size_px: int = 16):
        """margin_px / min_size_px: the box crop for a classifier whose metadata names no ``crop``."""
        self.classifier = classifier
        self.crop = crop_policy(classifier.info, CropPolicy("box", margin=margin_px, min_size=min_size_px))

    def classify(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The same detections, each with `classification` = (top label, probability)."""
        if not detections:
            return []
        crops = [self.crop.cut(image, d.box) for d in detections]
        results = self.classifier.classify(crops, k=1)
        return [dataclasses.replace(d, classification=r[0]) for d, r in zip(detections, results)]
