"""Burst capture: take the trigger's frame and the next few, keep the sharpest.

A part that has just stopped, or a conveyor that shakes, blurs the first frame; one a few
frames later is often sharp. Sharpness is the variance of the Laplacian of the grey image:
edges give a strong second derivative, and blur flattens it. The burst starts at the
trigger's own frame (index 0), so that frame is always a candidate, and on a tie the
earliest frame wins.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import cv2
import numpy as np

from ..events import Burst, Frame


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
    return float(std[0, 0]) ** 2


def sharpest(frames: Sequence[Frame], requested: int) -> Frame | None:
    """The sharpest of `frames` (None if there are none), with how it was chosen in `burst`."""
    if not frames:
        return None
    scores = [sharpness(frame.image) for frame in frames]
    best = max(range(len(scores)), key=scores.__getitem__)
    return replace(frames[best], burst=Burst(requested, best, tuple(round(score, 2) for score in scores)))
