"""The inspection line's business rule: any defect over its class threshold rejects the part."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import Detection, Outcome, Verdict


@dataclass(frozen=True)
class DefectRule:
    default_threshold: float
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def lowest_threshold(self) -> float:
        """The detector's confidence floor: nothing below it can ever count."""
        return min([self.default_threshold, *self.thresholds.values()])

    def threshold_for(self, label: str) -> float:
        return self.thresholds.get(label, self.default_threshold)

    def judge(self, detections: list[Detection]) -> Verdict:
        defects = tuple(d for d in detections if d.score >= self.threshold_for(d.label))
        if not defects:
            return Verdict(Outcome.PASS)
        worst = max(defects, key=lambda d: d.score)
        return Verdict(Outcome.REJECT, defects, reason=f"{len(defects)} defect(s), worst {worst.label} {worst.score:.2f}")

    @staticmethod
    def no_read(reason: str) -> Verdict:
        return Verdict(Outcome.NO_READ, reason=reason)
