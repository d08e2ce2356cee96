"""The quality-inspection line.

  sensor edge -> [capture thread] grab the frame now
              -> [inspect thread] detect -> rule -> reject pulse + PLC result
              -> [deliver thread] event JSON + JPEG crops to the publisher

The stages, warm-up, model swap and health are the triggered line's (agent/lines/triggered.py);
this module decides (the defect rule), acts (reject pulse, timed reject, PLC result) and writes
the inspection event.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Protocol

from ..act.plc import ResultCode
from ..events import Frame, Inspection, Outcome, Trigger
from ..infer.engine import BadFrame
from ..postprocess.inspection_rule import DefectRule
from .triggered import EVENT_SCHEMA, Camera, CropSettings, DetectorLike, Publisher, TriggeredLine

log = logging.getLogger(__name__)

_RESULT_CODES = {Outcome.PASS: ResultCode.PASS, Outcome.REJECT: ResultCode.REJECT, Outcome.NO_READ: ResultCode.NO_READ}


class Plc(Protocol):
    def write_result(self, inspection_id: int, result_code: ResultCode, defect_count: int, reject: bool,
                     defect_class: int = 0, trigger_id: int | None = None) -> bool: ...


class RejectOutput(Protocol):
    def pulse(self, seconds: float) -> None: ...


class InspectionLine(TriggeredLine):
    ITEM = "inspection"
    WAITING = "parts"
    COUNTERS = ("passed", "rejected", "no_reads", "plc_write_failures", "late_results")

    def __init__(
        self,
        name: str,
        device_id: str,
        camera: Camera,
        detector: DetectorLike,
        rule: DefectRule,
        plc: Plc | None,
        publisher: Publisher | None,
        reject_output: RejectOutput | None = None,
        reject_pulse_s: float = 0.05,
        crops: CropSettings = CropSettings(),
        queue_size: int = 64,
        model_name: str = "",
        cascade=None,
        reject_timer=None,
        stall_s: float = 2.0,
        burst_frames: int = 1,
    ):
        """reject_timer: an agent.act.reject_timing.RejectTimer; the reject then fires when the part
        reaches the station, and only a timely PASS passes. None: pulse at once (station at the camera).
        stall_s: a part waiting this long for its result, or a stage busy this long, is unhealthy.
        burst_frames: > 1 inspects the sharpest of that many frames from the trigger's own on.
        cascade: optional severity grading of each defect."""
        super().__init__(name, device_id, camera, detector, rule, publisher, crops=crops, queue_size=queue_size,
                         model_name=model_name, cascade=cascade, stall_s=stall_s, burst_frames=burst_frames)
        self._plc = plc
        self._reject_output = reject_output
        self._reject_pulse_s = reject_pulse_s
        self._reject_timer = reject_timer

    def _trigger_taken(self, trigger: Trigger) -> None:
        if self._reject_timer is not None:  # dropped or not, the part is on its way to the station
            self._reject_timer.part_entered(trigger.seq, trigger.t_mono)

    # -- inspect and act -------------------------------------------------------------
    def _failed(self, trigger: Trigger, frame: Frame | None) -> Inspection:
        inspection = Inspection(str(uuid.uuid4()), trigger, DefectRule.no_read("internal error"), frame)
        self._act(inspection)
        return inspection

    def _process(self, trigger: Trigger, frame: Frame | None, t_captured: float) -> Inspection:
        timings = {"capture": (t_captured - trigger.t_mono) * 1000}
        if frame is None:
            verdict = DefectRule.no_read("no frame from the camera")
        else:
            try:
                verdict = self.rule.judge(self._detect(frame, timings))
            except BadFrame as exc:
                self.counters["inference_errors"] += 1
                verdict = DefectRule.no_read(f"bad frame: {exc}")
            except RuntimeError as exc:
                self.counters["inference_errors"] += 1
                log.error("line %s: inference failed on inspection %d: %s", self.name, trigger.seq, exc)
                verdict = DefectRule.no_read("inference error")
        timings["detect"] = (time.monotonic() - t_captured) * 1000
        inspection = Inspection(str(uuid.uuid4()), trigger, verdict, frame, timings)
        self._act(inspection)
        timings["total"] = (time.monotonic() - trigger.t_mono) * 1000
        return inspection

    def _act(self, inspection: Inspection) -> None:
        verdict, trigger = inspection.verdict, inspection.trigger
        reject = verdict.outcome.rejects
        code = _RESULT_CODES[verdict.outcome]
        start = time.monotonic()
        if self._reject_timer is not None:
            if not self._reject_timer.result(trigger.seq, passed=not reject):
                # Too late to decide the part: it is rejected by policy, and the PLC is told so.
                reject, code = True, ResultCode.LATE
                self.counters["late_results"] += 1
        elif reject and self._reject_output is not None:
            self._reject_output.pulse(self._reject_pulse_s)
        if self._plc is not None:
            defect_class = 1 + verdict.defects[0].class_id if verdict.defects else 0
            written = self._plc.write_result(trigger.inspection_id, code, len(verdict.defects), reject,
                                             defect_class=defect_class, trigger_id=self._newest_inspection_id)
            if not written:
                self.counters["plc_write_failures"] += 1
        inspection.timings_ms["act"] = (time.monotonic() - start) * 1000
        self.counters["inspections"] += 1
        key = {Outcome.PASS: "passed", Outcome.REJECT: "rejected", Outcome.NO_READ: "no_reads"}[verdict.outcome]
        self.counters[key] += 1
        if verdict.outcome is Outcome.NO_READ:
            log.warning("line %s: inspection %d is a no read (%s): rejected", self.name, trigger.seq, verdict.reason,
                        extra={"line": self.name, "event_id": inspection.event_id})

    # -- deliver ---------------------------------------------------------------------
    def _deliver(self, inspection: Inspection) -> None:
        event = self.event_payload(inspection)
        self._publisher.publish_event(self.name, event)
        frame = inspection.frame
        if frame is None:
            return
        for index, defect in enumerate(inspection.verdict.defects[: self._crops.max_per_event]):
            meta = {"inspection_id": inspection.trigger.inspection_id, "label": defect.label,
                    "score": round(defect.score, 4)}
            if defect.classification is not None:
                meta["severity"] = defect.classification[0]
            self._publish_crop(frame, inspection.event_id, index, defect.box, meta)

    def event_payload(self, inspection: Inspection) -> dict:
        verdict, trigger, frame = inspection.verdict, inspection.trigger, inspection.frame
        return {
            "schema": EVENT_SCHEMA,
            "event_id": inspection.event_id,
            "device_id": self.device_id,
            "line": self.name,
            "inspection_id": trigger.inspection_id,
            "ts": round(trigger.t_wall, 3),
            "trigger": {"source": trigger.source, "seq": trigger.seq, "weight_g": trigger.weight_g,
                        "plc_trigger_id": trigger.plc_trigger_id},
            "result": verdict.outcome.value,
            "reason": verdict.reason,
            "defects": [self._defect_payload(i, d) for i, d in enumerate(verdict.defects)],
            "frame": None if frame is None else self._frame_payload(frame),
            "model": self._model_name,
            "timings_ms": {k: round(v, 2) for k, v in inspection.timings_ms.items()},
        }

    def _defect_payload(self, index: int, defect) -> dict:
        payload = {"label": defect.label, "score": round(defect.score, 4), "box": [round(v, 1) for v in defect.box],
                   "crop": index if index < self._crops.max_per_event else None}
        if defect.classification is not None:
            payload["severity"], payload["severity_score"] = defect.classification[0], round(defect.classification[1], 4)
        return payload

    def health(self) -> dict:
        return {
            **super().health(),
            **({"reject_timing": self._reject_timer.stats()} if self._reject_timer is not None else {}),
        }
