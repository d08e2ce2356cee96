"""Small frozen records passed between the stages of a line.

ingest -> Trigger, Frame; infer -> Detection; postprocess -> Verdict;
act/deliver consume an Inspection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class Trigger:
    line: str
    seq: int  # per-line, from 1; echoed to the PLC as the inspection id
    t_mono: float
    t_wall: float
    source: str  # "gpio", ...
    weight_g: float | None = None  # the stable weight, when a scale fired the trigger
    plc_trigger_id: int | None = None  # the PLC's own id for the part, when the PLC fired the trigger
    # The settled weight minus the one settled before it (what was put on the scale), with weight_g.
    weight_change_g: float | None = None

    @property
    def inspection_id(self) -> int:
        """What the result echoes to the PLC: the PLC's trigger id if it gave one, else seq."""
        return self.seq if self.plc_trigger_id is None else self.plc_trigger_id


@dataclass(frozen=True)
class Burst:
    """How a frame was chosen from a burst: `sharpness[chosen]` was the highest."""

    requested: int
    chosen: int  # index in the burst; 0 is the trigger's own frame
    sharpness: tuple[float, ...]  # variance of the Laplacian of each frame taken


@dataclass(frozen=True, eq=False)
class Frame:
    camera: str
    seq: int
    image: np.ndarray  # HxWx3 uint8 BGR
    t_mono: float
    t_wall: float
    burst: Burst | None = None  # set when the line keeps the sharpest of several frames


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source-frame pixels
    # The second stage's top label and probability for this box (severity, product, ...), if any.
    classification: tuple[str, float] | None = None


class Outcome(str, Enum):
    PASS = "pass"
    REJECT = "reject"
    NO_READ = "no_read"  # nothing to judge: the part is rejected (fail-safe)

    @property
    def rejects(self) -> bool:
        return self is not Outcome.PASS


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    defects: tuple[Detection, ...] = ()  # detections over their threshold
    reason: str = ""


@dataclass(frozen=True, eq=False)
class Inspection:
    """Everything known about one triggered inspection, handed to act and deliver."""

    event_id: str
    trigger: Trigger
    verdict: Verdict
    frame: Frame | None  # None on a no-read
    timings_ms: dict[str, float] = field(default_factory=dict)
