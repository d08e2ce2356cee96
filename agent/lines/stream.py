"""The stream line: continuous detection on live cameras (the surveillance use case's front end).

  camera readers (one per camera, LiveSource) -> [pump per camera] newest frame, rate cap, motion gate
      -> pending: the newest accepted frame of each camera (an older one still waiting is dropped, counted)
      -> [batch thread] the pending frames of one size as one batch -> AsyncDetector (THROUGHPUT hint)
         (a batch size not compiled yet compiles in the background; its frames go one by one meanwhile)
      -> [batch thread, woken when a request finishes] decode + NMS, in submission order
      -> results queue -> [deliver thread] per camera, with analytics: every
         inferred frame's detections -> tracker -> zones, tripwires, loitering -> one alert event each;
         then thresholds, optional classifier, one `detections` event per camera at most every
         `event_interval_s` while something is detected (with track ids), crops

Several requests are in flight at once, so capture, inference and post-processing overlap; the
batch thread blocks only while every request is busy, and meanwhile each camera's newest frame
replaces the one waiting (live video: the newest frame is the one worth inferring).

With a motion gate, a camera whose picture is still costs only the motion check (well under
1 ms a frame); the detector still looks every `still_interval_s`, so an object that stopped
moving (a parked car, a loiterer) keeps being reported.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable

import cv2

from ..events import Detection, Frame
from ..infer.engine import AsyncDetector, BadFrame, Detector
from ..infer.geometry import crop_box
from ..ingest.motion import MotionDetector, MotionSettings
from ..postprocess.analytics import CameraAnalytics
from ..postprocess.inspection_rule import DefectRule
from ..postprocess.zones import Alert
from .triggered import EVENT_SCHEMA, CropSettings

log = logging.getLogger(__name__)

_STOP = object()
STAGES = ("batch", "deliver")


@dataclass(frozen=True)
class StreamSettings:
    max_fps: float = 5.0  # per camera: frames offered to the detector per second, at most
    motion: MotionSettings | None = None  # None: every frame (up to max_fps) goes to the detector
    still_interval_s: float | None = 5.0  # with motion: look anyway this often; None: never
    event_interval_s: float = 1.0  # per camera: at most one event this often while something is seen
    max_batch: int = 4  # frames in one inference request
    queue_size: int = 16  # results waiting for the deliver thread; more are dropped, counted
    stall_s: float = 5.0  # a stage busy this long, or no result this long with frames waiting, is unhealthy


class StreamLine:
    def __init__(self, name: str, device_id: str, cameras: dict, detector: Detector, rule: DefectRule,
                 publisher, settings: StreamSettings = StreamSettings(), cascade=None,
                 crops: CropSettings = CropSettings(), model_name: str = "",
                 clock: Callable[[], float] = time.monotonic, analytics: dict[str, CameraAnalytics] | None = None,
                 classify_labels: frozenset[str] | None = None):
        """cameras: name -> a live source (agent.ingest.sources.LiveSource); detector: compiled with
        the THROUGHPUT hint; rule: per-class report thresholds (only its thresholds are used);
        analytics: camera -> its tracker, zones and tripwires (agent.config.analytics builds them);
        classify_labels: the detections the cascade classifies (None: all)."""
        self.name = name
        self.device_id = device_id
        self._cameras = cameras
        self._detector = detector
        self._rule = rule
        self._classify_labels = classify_labels
        self._publisher = publisher
        self._settings = settings
        self._cascade = cascade
        self._crops = crops
        self._model_name = model_name
        self._clock = clock
        self._motion = {cam: MotionDetector(settings.motion) for cam in cameras} if settings.motion else {}
        self._pending: dict[str, Frame] = {}
        self._cond = threading.Condition()
        self._results: queue.Queue = queue.Queue(settings.queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stage_threads: dict[str, threading.Thread] = {}
        self._busy_since: dict[str, float | None] = dict.fromkeys(STAGES)
        self._analytics = dict(analytics or {})
        unknown = sorted(set(self._analytics) - set(cameras))
        if unknown:
            raise ValueError(f"stream line {name}: analytics for camera {unknown[0]!r}, which the line does not read")
        self._async = AsyncDetector(detector, self._score_floor(rule), self._on_result, on_ready=self._wake)
        self.infer_ms: deque = deque(maxlen=200)  # recent request latencies, since start or the last swap
        self.frame_sizes: set[tuple[int, int]] = set()  # the cameras' resolutions, for warming a new model
        self._last_event: dict[str, float] = {}
        self._last_inferred: dict[str, float] = {}
        self._in_flight = 0
        self._last_result = clock()
        self.paused = False
        self.first_frame_at: float | None = None
        self.warm_up_error: str | None = None
        self.counters = dict.fromkeys(
            ("frames", "skipped_rate", "skipped_still", "skipped_paused", "dropped_behind", "inferred", "batches",
             "results_dropped", "inference_errors", "detections", "events", "alerts", "analytics_errors", "crops"), 0)
        self.per_camera = {cam: dict.fromkeys(("frames", "inferred", "detections", "events"), 0) for cam in cameras}

    def _score_floor(self, rule: DefectRule) -> float:
        """The detector's confidence floor: the lowest report threshold, or the tracker's second
        stage, which wants the weak detections the report thresholds leave out."""
        return min([rule.lowest_threshold, *(a.low_score for a in self._analytics.values())])

    @property
    def rule(self) -> DefectRule:
        return self._rule

    @rule.setter
    def rule(self, rule: DefectRule) -> None:
        """thresholds/set: the next frames use it, a lower threshold too (the floor follows)."""
        self._rule = rule
        self._async.conf_threshold = self._score_floor(rule)

    @property
    def model_name(self) -> str:
        return self._model_name

    def swap_models(self, detector, cascade, model_name: str, timeout_s: float = 5.0) -> bool:
        """Use these (compiled, warmed) models for the next batches. Requests in flight finish on the
        old ones and still deliver: wait_all here collects the old one's results."""
        new_async = AsyncDetector(detector, self._score_floor(self._rule), self._on_result, on_ready=self._wake)
        with self._cond:
            old_async, self._async = self._async, new_async
            self._detector, self._cascade, self._model_name = detector, cascade, model_name
        self.infer_ms.clear()
        log.info("stream line %s: now detecting with %s", self.name, model_name)
        try:
            old_async.wait_all()
        except RuntimeError as exc:
            log.warning("stream line %s: the old model's last requests: %s", self.name, exc)
        return True

    def load_figures(self) -> dict:
        """What the sync trial watches (agent.sync.job.trial_problem), in the inspection line's terms."""
        recent = list(self.infer_ms)
        return {"inference_errors": self.counters["inference_errors"] + self._async.errors,
                "triggers_dropped": self.counters["results_dropped"], "inspect_backlog": self._in_flight,
                "infer_ms_p50": statistics.median(recent) if len(recent) >= 10 else None}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        for cam, source in self._cameras.items():
            thread = threading.Thread(target=self._pump, args=(cam, source), name=f"{self.name}-{cam}-pump", daemon=True)
            self._threads.append(thread)
        for stage, target in (("batch", self._batch_loop), ("deliver", self._deliver_loop)):
            thread = threading.Thread(target=target, name=f"{self.name}-{stage}", daemon=True)
            self._stage_threads[stage] = thread
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 4.0) -> bool:
        """Stop taking frames, let the requests in flight finish, deliver their results, join."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = self._clock() + timeout_s
        batch = self._stage_threads.get("batch")
        if batch is not None:
            batch.join(max(0.0, deadline - self._clock()))
        try:
            self._async.wait_all()
        except RuntimeError as exc:
            log.warning("stream line %s: waiting for inference at stop: %s", self.name, exc)
        self._results.put(_STOP)
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.error("stream line %s: threads still running after %.1f s: %s", self.name, timeout_s, ", ".join(alive))
        self._threads, self._stage_threads = [], {}
        return not alive

    # -- camera side -----------------------------------------------------------------
    def _pump(self, cam: str, source) -> None:
        # A token bucket, not a minimum gap: a camera at exactly max_fps with a little jitter keeps
        # its full rate, and a faster one is thinned evenly to max_fps.
        allowance, last_t = 1.0, None
        while not self._stop.is_set():
            try:
                frame = source.next_frame(0.5)
            except Exception:  # a camera bug must not end the line's reading of it for good
                log.exception("stream line %s: reading camera %s failed", self.name, cam)
                self._stop.wait(1.0)
                continue
            if frame is None:
                continue
            self.counters["frames"] += 1
            self.per_camera[cam]["frames"] += 1
            if self.paused:
                self.counters["skipped_paused"] += 1
                continue
            if last_t is not None:
                allowance = min(1.0, allowance + (frame.t_mono - last_t) * self._settings.max_fps)
            last_t = frame.t_mono
            if allowance < 0.9:
                self.counters["skipped_rate"] += 1
                continue
            allowance -= 1.0
            if not self._worth_inferring(cam, frame):
                self.counters["skipped_still"] += 1
                continue
            with self._cond:
                if cam in self._pending:
                    self.counters["dropped_behind"] += 1
                self._pending[cam] = frame
                self._cond.notify()

    def _worth_inferring(self, cam: str, frame: Frame) -> bool:
        detector = self._motion.get(cam)
        if detector is None:
            return True
        try:
            moving = detector.detect(frame.image) is not None
        except Exception:
            log.exception("stream line %s: motion detection failed on camera %s", self.name, cam)
            return True  # cannot tell: look
        still = self._settings.still_interval_s
        due = still is not None and frame.t_mono - self._last_inferred.get(cam, -1e9) >= still
        return moving or due

    # -- inference -------------------------------------------------------------------
    def _batch_loop(self) -> None:
        while True:
            self._busy_since["batch"] = None
            with self._cond:
                while not self._pending and not self._stop.is_set() and not self._async.finished():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                taken, self._pending = self._pending, {}
                runner = self._async
            self._busy_since["batch"] = self._clock()
            try:
                runner.collect()  # results of the requests that finished, decoded here
            except RuntimeError as exc:
                log.error("stream line %s: collecting results failed: %s", self.name, exc)
            by_size: dict[tuple, list[tuple[str, Frame]]] = {}
            for cam, frame in taken.items():
                by_size.setdefault(frame.image.shape, []).append((cam, frame))
            for shape, group in by_size.items():
                for start in range(0, len(group), self._settings.max_batch):
                    chunk = group[start : start + self._settings.max_batch]
                    if len(chunk) == 1 or runner.ready(shape[:2], len(chunk)):
                        self._submit(chunk)
                    else:  # that batch size compiles in the background: one frame at a time meanwhile
                        for item in chunk:
                            self._submit([item])

    def _submit(self, items: list[tuple[str, Frame]]) -> None:
        for cam, frame in items:
            self._last_inferred[cam] = frame.t_mono
        try:
            with self._cond:
                self._in_flight += len(items)
            with self._cond:
                runner = self._async
            runner.submit([frame.image for _, frame in items], (items, self._clock()))
        except (BadFrame, RuntimeError) as exc:
            with self._cond:
                self._in_flight -= len(items)
            self.counters["inference_errors"] += 1
            self.warm_up_error = self.warm_up_error if self.first_frame_at else f"the detector failed: {exc}"
            log.error("stream line %s: inference failed on %s: %s", self.name, ", ".join(c for c, _ in items), exc)
            return
        self.counters["batches"] += 1

    def _wake(self) -> None:
        """On an OpenVINO thread, when a request finishes: wake the batch thread to collect it."""
        with self._cond:
            self._cond.notify_all()

    def _on_result(self, detections: list[list[Detection]], userdata) -> None:
        """On the thread that collects (the batch thread, or one waiting for all): hand over."""
        items, submitted = userdata
        now = self._clock()
        with self._cond:
            self._in_flight -= len(items)
        self._last_result = now
        if self.first_frame_at is None:
            self.first_frame_at = now
            self.warm_up_error = None
        self.counters["inferred"] += len(items)
        self.infer_ms.append((now - submitted) * 1000)
        for _, frame in items:
            self.frame_sizes.add(frame.image.shape[:2])
        try:
            self._results.put_nowait((items, detections, (now - submitted) * 1000))
        except queue.Full:
            self.counters["results_dropped"] += len(items)

    # -- deliver ---------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while True:
            self._busy_since["deliver"] = None
            item = self._results.get()
            if item is _STOP:
                return
            self._busy_since["deliver"] = self._clock()
            items, detections, infer_ms = item
            for (cam, frame), found in zip(items, detections):
                self.per_camera[cam]["inferred"] += 1
                try:
                    self._deliver(cam, frame, found, infer_ms, len(items))
                except Exception:
                    log.exception("stream line %s: delivering camera %s frame %d failed", self.name, cam, frame.seq)

    def _deliver(self, cam: str, frame: Frame, found: list[Detection], infer_ms: float, batch: int) -> None:
        track_ids: tuple[int | None, ...] | None = None
        analytics = self._analytics.get(cam)
        if analytics is not None:
            # Every inferred frame, empty or not, and every detection down to the tracker's floor.
            try:
                result = analytics.update(frame.t_mono, found, (frame.image.shape[1], frame.image.shape[0]))
            except Exception:  # a bug of ours in the analytics must not cost the detections event
                track_ids = (None,) * len(found)
                self.counters["analytics_errors"] += 1
                log.exception("stream line %s: analytics failed on camera %s frame %d", self.name, cam, frame.seq)
            else:
                track_ids = result.track_ids
                for alert in result.alerts:
                    self._publish_alert(cam, frame, alert, alert.kind in analytics.alert_crops)
        rule = self.rule
        kept = [i for i, d in enumerate(found) if d.score >= rule.threshold_for(d.label)]
        if not kept:
            return
        found = [found[i] for i in kept]
        ids = None if track_ids is None else [track_ids[i] for i in kept]
        self.counters["detections"] += len(found)
        self.per_camera[cam]["detections"] += len(found)
        if frame.t_mono - self._last_event.get(cam, -1e9) < self._settings.event_interval_s:
            return
        self._last_event[cam] = frame.t_mono
        timings = {"infer": infer_ms}
        cascade = self._cascade
        if cascade is not None:
            started = time.perf_counter()
            chosen = [i for i, d in enumerate(found) if self._classify_labels is None or d.label in self._classify_labels]
            if chosen:
                classified = cascade.classify(frame.image, [found[i] for i in chosen])
                found = list(found)
                for i, d in zip(chosen, classified):
                    found[i] = d
            timings["classify"] = (time.perf_counter() - started) * 1000
        event_id = str(uuid.uuid4())
        event = self.event_payload(event_id, cam, frame, found, timings, batch, ids)
        if self._publisher is None:
            return
        self._publisher.publish_event(self.name, event)
        self.counters["events"] += 1
        self.per_camera[cam]["events"] += 1
        for index, d in enumerate(found[: self._crops.max_per_event]):
            meta = {"label": d.label, "score": round(d.score, 4)}
            if d.classification is not None:
                meta["class"] = d.classification[0]
            if ids is not None and ids[index] is not None:
                meta["track_id"] = ids[index]
            self._publish_crop(event_id, index, cam, frame, d.box, meta)

    def _publish_crop(self, event_id: str, index: int, cam: str, frame: Frame, box, meta: dict) -> bool:
        height, width = frame.image.shape[:2]
        x1, y1, x2, y2 = crop_box(box, width, height, self._crops.margin_px, self._crops.min_size_px)
        ok, jpeg = cv2.imencode(".jpg", frame.image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, self._crops.jpeg_quality])
        if not ok:
            return False
        meta = {"schema": EVENT_SCHEMA, "event_id": event_id, "camera": cam, **meta, "crop": f"{x1},{y1},{x2},{y2}"}
        self._publisher.publish_crop(self.name, event_id, index, jpeg.tobytes(), meta)
        self.counters["crops"] += 1
        return True

    def _publish_alert(self, cam: str, frame: Frame, alert: Alert, crop: bool) -> None:
        """Alerts are never rate-limited: each is its own event, in the order they happened."""
        self.counters["alerts"] += 1
        if self._publisher is None:
            return
        event_id = str(uuid.uuid4())
        # A crop shows the track only when it was seen in this very frame (a lost track was not).
        crop = crop and alert.score is not None and self._crops.max_per_event > 0
        self._publisher.publish_event(self.name, self.alert_payload(event_id, cam, frame, alert, 0 if crop else None))
        if crop:
            self._publish_crop(event_id, 0, cam, frame, alert.box,
                               {"label": alert.label, "score": round(alert.score, 4), "track_id": alert.track_id,
                                "alert": alert.kind})

    def alert_payload(self, event_id: str, cam: str, frame: Frame, alert: Alert, crop: int | None) -> dict:
        def wall(t_mono: float) -> float:
            return round(frame.t_wall + (t_mono - frame.t_mono), 3)

        payload = {
            "schema": EVENT_SCHEMA, "kind": alert.kind, "event_id": event_id, "device_id": self.device_id,
            "line": self.name, "camera": cam, "ts": wall(alert.t),
            "track_id": alert.track_id, "label": alert.label,
            "score": None if alert.score is None else round(alert.score, 4),
            "box": [round(v, 1) for v in alert.box], "point": [round(v, 1) for v in alert.point],
            "track_started_ts": wall(alert.first_seen), "crop": crop,
            "frame": {"camera": frame.camera, "seq": frame.seq, "width": frame.image.shape[1],
                      "height": frame.image.shape[0]},
        }
        if alert.kind == "line_cross":
            payload.update(tripwire=alert.name, direction=alert.direction, counts=alert.counts)
        else:
            payload.update(zone=alert.name, occupancy=alert.counts)
        if alert.entered is not None:
            payload.update(entered_ts=wall(alert.entered), dwell_s=round(alert.dwell_s, 3))
        if alert.reason is not None:
            payload["reason"] = alert.reason
        return payload

    def event_payload(self, event_id: str, cam: str, frame: Frame, found: list[Detection], timings: dict,
                      batch: int, track_ids: list[int | None] | None = None) -> dict:
        detections = []
        for index, d in enumerate(found):
            item = {"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box],
                    "crop": index if index < self._crops.max_per_event else None}
            if d.classification is not None:
                item["class"], item["class_score"] = d.classification[0], round(d.classification[1], 4)
            if track_ids is not None:
                item["track_id"] = track_ids[index]
            detections.append(item)
        counts: dict[str, int] = {}
        for d in found:
            counts[d.label] = counts.get(d.label, 0) + 1
        return {
            "schema": EVENT_SCHEMA, "kind": "detections", "event_id": event_id, "device_id": self.device_id,
            "line": self.name, "camera": cam, "ts": round(frame.t_wall, 3), "counts": counts,
            "detections": detections,
            "frame": {"camera": frame.camera, "seq": frame.seq, "width": frame.image.shape[1], "height": frame.image.shape[0]},
            "model": self._model_name, "batch": batch,
            "timings_ms": {k: round(v, 2) for k, v in timings.items()},
        }

    # -- readiness and liveness (read by agent.runtime.watchdog and the heartbeat) ------
    def request_warm_up(self) -> bool:
        """A stream line warms up on its own first frames: nothing to queue."""
        return not self._stop.is_set()

    def stage_activity(self) -> dict[str, dict]:
        now = self._clock()
        activity = {}
        for stage in STAGES:
            since, thread = self._busy_since[stage], self._stage_threads.get(stage)
            activity[stage] = {"alive": thread is not None and thread.is_alive(),
                               "busy_s": None if since is None else now - since}
        return activity

    def pipeline_problem(self) -> str | None:
        for stage, activity in self.stage_activity().items():
            if not activity["alive"]:
                return f"{stage} stage not running"
            if activity["busy_s"] is not None and activity["busy_s"] > self._settings.stall_s:
                return f"{stage} stage stuck for {activity['busy_s']:.1f} s"
        if self.warm_up_error is not None:
            return f"model: {self.warm_up_error}"
        offline = [cam for cam, source in self._cameras.items() if source.stats().get("online") is False]
        if offline:
            return f"camera offline: {', '.join(offline)}"
        waited = self._clock() - self._last_result
        if self._in_flight > 0 and waited > self._settings.stall_s:
            return f"no inference result for {waited:.1f} s with {self._in_flight} frames in flight"
        return None

    def health(self) -> dict:
        return {
            "type": "stream", **self.counters, "paused": self.paused, "in_flight": self._in_flight,
            "queues": {"pending": len(self._pending), "results": self._results.qsize()},
            "cameras": self.per_camera,
            "analytics": {cam: a.health() for cam, a in self._analytics.items()},
            "running": bool(self._threads) and all(t.is_alive() for t in self._threads),
        }
