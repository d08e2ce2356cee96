"""The staged machinery of a triggered line, shared by the inspection and the checkout line.

  trigger -> [capture thread] the trigger's own frame (or the sharpest of a burst from it on)
          -> [inspect thread] detect (+ classify) -> decide and act          (the line's own: _process)
          -> [deliver thread] event JSON + JPEG crops to the publisher        (the line's own: _deliver)

Capture runs on its own thread so the frame is the one at the trigger, not the one when the
previous item is done. Acting never waits on the network: delivery is queued to its own thread.
Between two items the inspect thread applies a model swap (agent.sync); a warm-up request runs
one frame through capture and detect with nothing behind it. Health, liveness and the
pipeline_problem() the PLC heartbeat and the watchdog read are the same for every triggered line.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import cv2

from ..events import Detection, Frame, Trigger
from ..infer.engine import BadFrame
from ..infer.geometry import crop_box
from ..ingest.burst import sharpest
from ..postprocess.inspection_rule import DefectRule

log = logging.getLogger(__name__)

_STOP = object()
EVENT_SCHEMA = 1
STAGES = ("capture", "inspect", "deliver")


class _WarmUp:
    """A capture request with nothing behind it: one frame through the detector, no result."""

    t_mono = None  # no trigger time: the camera's next frame


_WARM_UP = _WarmUp()


@dataclass(frozen=True)
class _Swap:
    """New models (and whatever else the line swaps with them), applied by the inspect thread
    between two items."""

    detector: object
    cascade: object
    model_name: str
    extra: dict
    done: threading.Event


_SWAP_WAKE = object()  # wakes an idle inspect thread to apply a pending swap


class Camera(Protocol):
    def grab(self, after: float | None = None) -> Frame | None: ...

    def grab_burst(self, after: float | None, count: int) -> list[Frame]: ...


class DetectorLike(Protocol):
    last_infer_ms: float

    def detect(self, image, conf_threshold: float) -> list: ...


class Publisher(Protocol):
    def publish_event(self, line: str, event: dict) -> None: ...

    def publish_crop(self, line: str, event_id: str, index: int, jpeg: bytes, meta: dict) -> None: ...


@dataclass(frozen=True)
class CropSettings:
    margin_px: int = 8
    min_size_px: int = 32
    max_per_event: int = 8
    jpeg_quality: int = 90


class TriggeredLine:
    """Subclasses implement _process (decide and act on one item), _failed (the fail-safe result
    when _process raised) and _deliver (publish one result); RESULTS names the counter of results."""

    RESULTS = "inspections"  # the counter _process's results are counted in (by the subclass)
    COUNTERS: tuple[str, ...] = ()  # the subclass's own counters, besides the shared ones
    ITEM = "item"  # one triggered item, in messages: inspection, basket
    WAITING = "items"  # what waits for a result, in messages: parts, baskets

    def __init__(self, name: str, device_id: str, camera: Camera, detector: DetectorLike, rule: DefectRule,
                 publisher: Publisher | None, *, crops: CropSettings = CropSettings(), queue_size: int = 64,
                 model_name: str = "", cascade=None, stall_s: float = 2.0, burst_frames: int = 1):
        """rule: the detector's score thresholds (and whatever the subclass judges with it);
        cascade: an optional second stage classifying each detection; stall_s: an item waiting
        this long for its result, or a stage busy this long, is unhealthy; burst_frames: > 1
        takes the sharpest of that many frames from the trigger's own on."""
        self.name = name
        self.device_id = device_id
        self._camera = camera
        self._detector = detector
        self._cascade = cascade
        self.rule = rule
        self._publisher = publisher
        self._stall_s = stall_s
        self._last_progress = time.monotonic()  # last result, or the trigger that ended an idle spell
        self._crops = crops
        self._model_name = model_name
        self._seq = 0
        self._newest_inspection_id = 0  # of the newest trigger: the PLC's trigger id for PLC-triggered parts
        self._burst_frames = burst_frames
        self._seq_lock = threading.Lock()
        self._capture_q: queue.Queue = queue.Queue(queue_size)
        self._inspect_q: queue.Queue = queue.Queue(queue_size)
        self._deliver_q: queue.Queue = queue.Queue(queue_size * 4)
        self._accepting = False
        # Paused by a command: triggers are counted and ignored (no capture, no result, no actuation).
        self.paused = False
        self.triggers_while_paused = 0
        self._threads: list[threading.Thread] = []
        # Per stage: when it took the item it is working on; None while it waits for work.
        self._busy_since: dict[str, float | None] = dict.fromkeys(STAGES)
        self.first_frame_at: float | None = None  # when the detector first ran on a frame (monotonic)
        self.last_frame_hw: tuple[int, int] | None = None  # the camera's resolution, for warming a new model
        self.infer_ms: deque = deque(maxlen=200)  # recent inference times, since start or the last model swap
        self._pending_swap: _Swap | None = None
        self.warm_up_error: str | None = None
        self.counters = dict.fromkeys(
            ("triggers", "triggers_dropped", self.RESULTS, *self.COUNTERS, "inference_errors", "events_dropped"), 0)

    # -- what a line kind decides ------------------------------------------------------
    def _process(self, trigger: Trigger, frame: Frame | None, t_captured: float):
        """Decide and act on one triggered item; the result goes to _deliver."""
        raise NotImplementedError

    def _failed(self, trigger: Trigger, frame: Frame | None):
        """The fail-safe result (acted on) for an item whose _process raised."""
        raise NotImplementedError

    def _deliver(self, result) -> None:
        raise NotImplementedError

    def _trigger_taken(self, trigger: Trigger) -> None:
        """Called for every trigger the line takes, dropped or not (e.g. a part in transit)."""

    def _swapped(self, extra: dict) -> None:
        """Called on the inspect thread with a swap's extras, after its models were applied."""

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
    def on_trigger(self, t_mono: float | None = None, source: str = "gpio", weight_g: float | None = None,
                   plc_trigger_id: int | None = None, weight_change_g: float | None = None) -> Trigger | None:
        """Called from the sensor's callback thread: must return at once. plc_trigger_id: the
        PLC's id for the part, echoed in the result instead of the line's sequence number."""
        if not self._accepting:
            return None
        if self.paused:
            self.triggers_while_paused += 1
            return None
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
            self._newest_inspection_id = seq if plc_trigger_id is None else plc_trigger_id
        t_mono = time.monotonic() if t_mono is None else t_mono
        trigger = Trigger(line=self.name, seq=seq, t_mono=t_mono, t_wall=time.time() - (time.monotonic() - t_mono),
                          source=source, weight_g=weight_g, plc_trigger_id=plc_trigger_id,
                          weight_change_g=weight_change_g)
        if self._in_flight() == 0:
            self._last_progress = time.monotonic()
        self.counters["triggers"] += 1
        self._trigger_taken(trigger)
        try:
            self._capture_q.put_nowait(trigger)
        except queue.Full:
            # Hopelessly behind: this item gets no result (a PLC rejects a part without one).
            self.counters["triggers_dropped"] += 1
            log.warning("line %s: trigger %d dropped, capture queue full", self.name, seq)
        return trigger

    def _take(self, stage: str, source: queue.Queue):
        """The stage's next item; the stage counts as busy from then on (see stage_activity)."""
        self._busy_since[stage] = None
        item = source.get()
        self._busy_since[stage] = time.monotonic()
        return item

    def _capture_loop(self) -> None:
        while True:
            trigger = self._take("capture", self._capture_q)
            if trigger is _STOP:
                self._inspect_q.put(_STOP)
                return
            if self._burst_frames > 1 and trigger is not _WARM_UP:  # from the frame reserved at the trigger on
                frame = sharpest(self._camera.grab_burst(trigger.t_mono, self._burst_frames), self._burst_frames)
            else:
                frame = self._camera.grab(after=trigger.t_mono)  # the frame reserved at the trigger
            self._inspect_q.put((trigger, frame, time.monotonic()))

    # -- inspect and act -------------------------------------------------------------
    def _inspect_loop(self) -> None:
        while True:
            item = self._take("inspect", self._inspect_q)
            if item is _STOP:
                self._deliver_q.put(_STOP)
                return
            if self._pending_swap is not None:
                self._apply_swap()
            if item is _SWAP_WAKE:
                continue
            trigger, frame, t_captured = item
            if trigger is _WARM_UP:
                self._warm_up(frame)
                continue
            try:
                result = self._process(trigger, frame, t_captured)
            except Exception:  # a bug of ours must not stop the line; the item fails safe
                log.exception("line %s: %s %d failed", self.name, self.ITEM, trigger.seq)
                result = self._failed(trigger, frame)
            self._last_progress = time.monotonic()
            try:
                self._deliver_q.put_nowait(result)
            except queue.Full:
                self.counters["events_dropped"] += 1

    def _detect(self, frame: Frame, timings: dict, floor: float | None = None) -> list[Detection]:
        """The detector on the frame (down to floor; default the rule's lowest threshold), then the
        cascade (if any) on every detection. Fills timings (infer, classify); raises BadFrame or
        RuntimeError."""
        detections = self._detector.detect(frame.image, self.rule.lowest_threshold if floor is None else floor)
        timings["infer"] = self._detector.last_infer_ms
        self.infer_ms.append(timings["infer"])
        self.last_frame_hw = frame.image.shape[:2]
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        if self._cascade is not None and detections:
            detections = self._cascade.classify(frame.image, detections)
            timings["classify"] = self._cascade.classifier.last_infer_ms
        return detections

    # -- deliver ---------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while True:
            result = self._take("deliver", self._deliver_q)
            if result is _STOP:
                return
            if self._publisher is None:
                continue
            try:
                self._deliver(result)
            except Exception:
                log.exception("line %s: delivering event %s failed", self.name, result.event_id,
                              extra={"line": self.name, "event_id": result.event_id})

    def _publish_crop(self, frame: Frame, event_id: str, index: int, box, meta: dict) -> bool:
        """A JPEG crop of box (grown by the margin, at least min_size) with meta as its properties."""
        height, width = frame.image.shape[:2]
        x1, y1, x2, y2 = crop_box(box, width, height, self._crops.margin_px, self._crops.min_size_px)
        ok, jpeg = cv2.imencode(".jpg", frame.image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, self._crops.jpeg_quality])
        if not ok:
            return False
        meta = {"schema": EVENT_SCHEMA, "event_id": event_id, **meta, "crop": f"{x1},{y1},{x2},{y2}"}
        self._publisher.publish_crop(self.name, event_id, index, jpeg.tobytes(), meta)
        return True

    @staticmethod
    def _frame_payload(frame: Frame) -> dict:
        payload = {"camera": frame.camera, "seq": frame.seq, "width": frame.image.shape[1], "height": frame.image.shape[0]}
        if frame.burst is not None:
            payload["burst"] = {"requested": frame.burst.requested, "chosen": frame.burst.chosen,
                                "sharpness": list(frame.burst.sharpness)}
        return payload

    # -- model swap (agent.sync) -------------------------------------------------------
    def swap_models(self, detector, cascade, model_name: str, timeout_s: float = 5.0, **extra) -> bool:
        """Use these (already compiled and warmed) models from the next item on: no trigger is
        lost or held back, the one in progress finishes on the old ones. True once applied.
        extra: what the line swaps together with its models (the checkout line's catalog)."""
        swap = _Swap(detector, cascade, model_name, extra, threading.Event())
        self._pending_swap = swap
        if not any(t.is_alive() for t in self._threads):
            self._apply_swap()
            return True
        try:
            self._inspect_q.put_nowait(_SWAP_WAKE)
        except queue.Full:
            pass  # busy: the next item applies it
        return swap.done.wait(timeout_s)

    def _apply_swap(self) -> None:
        swap, self._pending_swap = self._pending_swap, None
        if swap is None:
            return
        self._detector, self._cascade, self._model_name = swap.detector, swap.cascade, swap.model_name
        self._swapped(swap.extra)
        self.infer_ms.clear()
        log.info("line %s: now inspecting with %s", self.name, swap.model_name)
        swap.done.set()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def frame_sizes(self) -> set[tuple[int, int]]:
        """The camera's resolution once a frame was seen, for warming a new model."""
        return {self.last_frame_hw} if self.last_frame_hw is not None else set()

    def load_figures(self) -> dict:
        """What the sync trial watches (agent.sync.job.trial_problem)."""
        recent = list(self.infer_ms)
        return {"inference_errors": self.counters["inference_errors"], "triggers_dropped": self.counters["triggers_dropped"],
                "inspect_backlog": self._inspect_q.qsize(),
                "infer_ms_p50": statistics.median(recent) if len(recent) >= 10 else None}

    # -- readiness and liveness (read by agent.runtime.watchdog) ----------------------
    def request_warm_up(self) -> bool:
        """Queue one frame through capture and detect with nothing behind it (no result, no event).

        It compiles the detector for the camera's resolution, so the first item is not slowed by
        it, and sets `first_frame_at`. False if the line is not taking work or is full.
        """
        if not self._accepting:
            return False
        try:
            self._capture_q.put_nowait(_WARM_UP)
        except queue.Full:
            return False
        return True

    def _warm_up(self, frame: Frame | None) -> None:
        if frame is None:
            self.warm_up_error = f"no frame ({getattr(self._camera, 'last_error', None) or 'camera failed'})"
            return
        try:
            found = self._detector.detect(frame.image, self.rule.lowest_threshold)
            if self._cascade is not None:  # the first item's crops are not slowed by a first run either
                self._cascade.classify(frame.image, found[:1] or [Detection(0, "", 0.0, (0.0, 0.0, 64.0, 64.0))])
        except (BadFrame, RuntimeError) as exc:
            self.warm_up_error = f"the detector failed on the first frame: {exc}"
            log.error("line %s: %s", self.name, self.warm_up_error)
            return
        self.warm_up_error = None
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()

    def stage_activity(self) -> dict[str, dict]:
        """Per stage: whether its thread is alive, and for how long it has held its current item
        (`busy_s`, None while it waits for work). A stage busy for long is stuck."""
        now = time.monotonic()
        threads = dict(zip(STAGES, self._threads))
        activity = {}
        for stage in STAGES:
            since = self._busy_since[stage]
            thread = threads.get(stage)
            activity[stage] = {"alive": thread is not None and thread.is_alive(),
                               "busy_s": None if since is None else now - since}
        return activity

    def _in_flight(self) -> int:
        """Triggers taken but not yet answered."""
        c = self.counters
        return c["triggers"] - c["triggers_dropped"] - c[self.RESULTS]

    def pipeline_problem(self) -> str | None:
        """None while the line is healthy enough to keep the PLC heartbeat going; else why not.

        Healthy: every stage thread alive and none stuck on one item for stall_s; the camera
        online; the detector ran on its warm-up frame; and either idle (nothing waiting:
        idle-but-alive counts as healthy) or the last result came within stall_s.
        """
        now = time.monotonic()
        for stage, activity in self.stage_activity().items():
            if not activity["alive"]:
                return f"{stage} stage not running"
            if activity["busy_s"] is not None and activity["busy_s"] > self._stall_s:
                return f"{stage} stage stuck for {activity['busy_s']:.1f} s"
        if self.warm_up_error is not None:
            return f"model: {self.warm_up_error}"
        stats = getattr(self._camera, "stats", None)
        if stats is not None and stats().get("online") is False:
            return "camera offline"
        if self._in_flight() > 0 and now - self._last_progress > self._stall_s:
            return f"no result for {now - self._last_progress:.1f} s with {self._in_flight()} {self.WAITING} waiting"
        return None

    def health(self) -> dict:
        return {
            **self.counters,
            "queues": {"capture": self._capture_q.qsize(), "inspect": self._inspect_q.qsize(), "deliver": self._deliver_q.qsize()},
            "running": bool(self._threads) and all(t.is_alive() for t in self._threads),
            "paused": self.paused,
            "triggers_while_paused": self.triggers_while_paused,
            "model": self._model_name,
            "warm": self.first_frame_at is not None,  # the detector ran on a frame of the camera
        }
