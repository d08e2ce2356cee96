"""The quality-inspection line.

  sensor edge -> [capture thread] grab the frame now
              -> [inspect thread] detect -> rule -> reject pulse + PLC result
              -> [deliver thread] event JSON + JPEG crops to the publisher

Capture runs on its own thread so a part is photographed when it is in front of the camera,
not when the previous inspection is done. Acting never waits on the network: delivery is
queued to its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import cv2

from ..act.plc import ResultCode
from ..events import Frame, Inspection, Outcome, Trigger, Verdict
from ..infer.engine import BadFrame
from ..infer.geometry import crop_box
from ..postprocess.inspection_rule import DefectRule

log = logging.getLogger(__name__)

_STOP = object()
_RESULT_CODES = {Outcome.PASS: ResultCode.PASS, Outcome.REJECT: ResultCode.REJECT, Outcome.NO_READ: ResultCode.NO_READ}
EVENT_SCHEMA = 1


class Camera(Protocol):
    def grab(self) -> Frame | None: ...


class DetectorLike(Protocol):
    last_infer_ms: float

    def detect(self, image, conf_threshold: float) -> list: ...


class Plc(Protocol):
    def write_result(self, inspection_id: int, result_code: ResultCode, defect_count: int, reject: bool) -> bool: ...


class Publisher(Protocol):
    def publish_event(self, line: str, event: dict) -> None: ...

    def publish_crop(self, line: str, event_id: str, index: int, jpeg: bytes, meta: dict) -> None: ...


class RejectOutput(Protocol):
    def pulse(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class CropSettings:
    margin_px: int = 8
    min_size_px: int = 32
    max_per_event: int = 8
    jpeg_quality: int = 90


class InspectionLine:
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
    ):
        self.name = name
        self.device_id = device_id
        self._camera = camera
        self._detector = detector
        self._cascade = cascade  # optional severity grading of each defect
        self.rule = rule
        self._plc = plc
        self._publisher = publisher
        self._reject_output = reject_output
        self._reject_pulse_s = reject_pulse_s
        self._crops = crops
        self._model_name = model_name
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._capture_q: queue.Queue = queue.Queue(queue_size)
        self._inspect_q: queue.Queue = queue.Queue(queue_size)
        self._deliver_q: queue.Queue = queue.Queue(queue_size * 4)
        self._accepting = False
        self._threads: list[threading.Thread] = []
        self.counters = dict.fromkeys(
            ("triggers", "triggers_dropped", "inspections", "passed", "rejected", "no_reads",
             "inference_errors", "plc_write_failures", "events_dropped"),
            0,
        )

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        stages = [("capture", self._capture_loop), ("inspect", self._inspect_loop), ("deliver", self._deliver_loop)]
        for stage, target in stages:
            thread = threading.Thread(target=target, name=f"{self.name}-{stage}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._accepting = True

    def stop(self, timeout_s: float = 4.0) -> bool:
        """Stop taking triggers, finish what is in flight, and join. True if all stages ended."""
        self._accepting = False
        if not self._threads:
            return True
        self._capture_q.put(_STOP)  # stages pass it on after the work queued before it
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.error("line %s: stages still running after %.1f s: %s", self.name, timeout_s, ", ".join(alive))
        self._threads = []
        return not alive

    # -- ingest ----------------------------------------------------------------------
    def on_trigger(self, t_mono: float | None = None, source: str = "gpio") -> Trigger | None:
        """Called from the sensor's callback thread: must return at once."""
        if not self._accepting:
            return None
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        t_mono = time.monotonic() if t_mono is None else t_mono
        trigger = Trigger(line=self.name, seq=seq, t_mono=t_mono, t_wall=time.time() - (time.monotonic() - t_mono), source=source)
        self.counters["triggers"] += 1
        try:
            self._capture_q.put_nowait(trigger)
        except queue.Full:
            # Hopelessly behind: this part gets no result, and the PLC rejects a part without one.
            self.counters["triggers_dropped"] += 1
            log.warning("line %s: trigger %d dropped, capture queue full", self.name, seq)
        return trigger

    def _capture_loop(self) -> None:
        while True:
            trigger = self._capture_q.get()
            if trigger is _STOP:
                self._inspect_q.put(_STOP)
                return
            frame = self._camera.grab()
            self._inspect_q.put((trigger, frame, time.monotonic()))

    # -- inspect and act -------------------------------------------------------------
    def _inspect_loop(self) -> None:
        while True:
            item = self._inspect_q.get()
            if item is _STOP:
                self._deliver_q.put(_STOP)
                return
            trigger, frame, t_captured = item
            try:
                inspection = self._inspect(trigger, frame, t_captured)
            except Exception:  # a bug of ours must not stop the line; the part fails safe
                log.exception("line %s: inspection %d failed", self.name, trigger.seq)
                inspection = Inspection(str(uuid.uuid4()), trigger, DefectRule.no_read("internal error"), frame)
                self._act(inspection)
            try:
                self._deliver_q.put_nowait(inspection)
            except queue.Full:
                self.counters["events_dropped"] += 1

    def _inspect(self, trigger: Trigger, frame: Frame | None, t_captured: float) -> Inspection:
        timings = {"capture": (t_captured - trigger.t_mono) * 1000}
        if frame is None:
            verdict = DefectRule.no_read("no frame from the camera")
        else:
            try:
                detections = self._detector.detect(frame.image, self.rule.lowest_threshold)
                timings["infer"] = self._detector.last_infer_ms
                if self._cascade is not None and detections:
                    detections = self._cascade.classify(frame.image, detections)
                    timings["classify"] = self._cascade.classifier.last_infer_ms
                verdict = self.rule.judge(detections)
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
        start = time.monotonic()
        if reject and self._reject_output is not None:
            self._reject_output.pulse(self._reject_pulse_s)
        if self._plc is not None:
            written = self._plc.write_result(trigger.seq, _RESULT_CODES[verdict.outcome], len(verdict.defects), reject)
            if not written:
                self.counters["plc_write_failures"] += 1
        inspection.timings_ms["act"] = (time.monotonic() - start) * 1000
        self.counters["inspections"] += 1
        key = {Outcome.PASS: "passed", Outcome.REJECT: "rejected", Outcome.NO_READ: "no_reads"}[verdict.outcome]
        self.counters[key] += 1
        if verdict.outcome is Outcome.NO_READ:
            log.warning("line %s: inspection %d is a no read (%s): rejected", self.name, trigger.seq, verdict.reason)

    # -- deliver ---------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while True:
            inspection = self._deliver_q.get()
            if inspection is _STOP:
                return
            if self._publisher is None:
                continue
            try:
                self._deliver(inspection)
            except Exception:
                log.exception("line %s: delivering event %s failed", self.name, inspection.event_id)

    def _deliver(self, inspection: Inspection) -> None:
        event = self.event_payload(inspection)
        self._publisher.publish_event(self.name, event)
        frame = inspection.frame
        if frame is None:
            return
        height, width = frame.image.shape[:2]
        for index, defect in enumerate(inspection.verdict.defects[: self._crops.max_per_event]):
            x1, y1, x2, y2 = crop_box(defect.box, width, height, self._crops.margin_px, self._crops.min_size_px)
            ok, jpeg = cv2.imencode(".jpg", frame.image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, self._crops.jpeg_quality])
            if not ok:
                continue
            meta = {
                "schema": EVENT_SCHEMA, "event_id": inspection.event_id, "inspection_id": inspection.trigger.seq,
                "label": defect.label, "score": round(defect.score, 4), "crop": f"{x1},{y1},{x2},{y2}",
            }
            if defect.classification is not None:
                meta["severity"] = defect.classification[0]
            self._publisher.publish_crop(self.name, inspection.event_id, index, jpeg.tobytes(), meta)

    def event_payload(self, inspection: Inspection) -> dict:
        verdict, trigger, frame = inspection.verdict, inspection.trigger, inspection.frame
        return {
            "schema": EVENT_SCHEMA,
            "event_id": inspection.event_id,
            "device_id": self.device_id,
            "line": self.name,
            "inspection_id": trigger.seq,
            "ts": round(trigger.t_wall, 3),
            "trigger": {"source": trigger.source, "seq": trigger.seq},
            "result": verdict.outcome.value,
            "reason": verdict.reason,
            "defects": [self._defect_payload(i, d) for i, d in enumerate(verdict.defects)],
            "frame": None if frame is None else {"camera": frame.camera, "seq": frame.seq,
                                                 "width": frame.image.shape[1], "height": frame.image.shape[0]},
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
            **self.counters,
            "queues": {"capture": self._capture_q.qsize(), "inspect": self._inspect_q.qsize(), "deliver": self._deliver_q.qsize()},
            "running": bool(self._threads) and all(t.is_alive() for t in self._threads),
        }
