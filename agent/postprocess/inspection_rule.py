"""The inspection line's business rule: any defect over its class threshold rejects the part."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import Detection, Outcome, Verdict


@dataclass(frozen=True)
class DefectRule:
    default_threshold: float
    thresholds: dict[str, float] = field(default_factory=dict)
    # With a severity classifier: only defects classified into these severities reject.
    # Defects without a classification always count (fail safe).
    reject_severities: frozenset[str] | None = None

    @property
    def lowest_threshold(self) -> float:
        """The detector's confidence floor: nothing below it can ever count."""
        return min([self.default_threshold, *self.thresholds.values()])

    def threshold_for(self, label: str) -> float:
        return self.thresholds.get(label, self.default_threshold)

    def counts(self, detection: Detection) -> bool:
        if detection.score < self.threshold_for(detection.label):
            return False
        if self.reject_severities is None or detection.classification is None:
            return True
        return detection.classification[0] in self.reject_severities

    def judge(self, detections: list[Detection]) -> Verdict:
        """Reject when any defect counts. All defects over threshold are reported either way."""
        found = tuple(d for d in detections if d.score >= self.threshold_for(d.label))
        rejecting = [d for d in found if self.counts(d)]
        if not rejecting:
            reason = f"{len(found)} defect(s) below the reject severities" if found else ""
            return Verdict(Outcome.PASS, found, reason=reason)
        worst = max(rejecting, key=lambda d: d.score)
        severity = f" ({worst.classification[0]})" if worst.classification else ""
        return Verdict(Outcome.REJECT, found, reason=f"{len(rejecting)} rejecting defect(s), worst {worst.label}{severity} {worst.score:.2f}")

    @staticmethod
    def no_read(reason: str) -> Verdict:
        return Verdict(Outcome.NO_READ, reason=reason)
