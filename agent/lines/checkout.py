"""The retail self-checkout line.

  motion + a settled weight change (all_of trigger) -> [capture thread] the frame at the trigger
      -> [inspect thread] product detector -> classifier per box -> decide (agent.postprocess.checkout:
         catalog lookup, prices, weight check) -> a basket: charge it, or send it to an attendant
      -> [deliver thread] the basket event (MQTT, through the outbox) and, in the same commit, the
         POS call (durable webhook); a JPEG crop per product

The stages, warm-up, model swap and health are the triggered line's (agent/lines/triggered.py).
Everything is decided here, offline: the product database is a local SQLite file, events wait in
the outbox and POS calls in the outbox file, so a broker or POS outage never holds the line.
The catalog is swapped with the models, between two baskets, so a new classifier never meets an
old product database.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from ..events import Frame, Trigger
from ..infer.engine import BadFrame
from ..postprocess.checkout import OUTCOMES, Basket, CheckoutRules, Platter, decide, no_read
from ..postprocess.inspection_rule import DefectRule
from .triggered import EVENT_SCHEMA, Camera, CropSettings, DetectorLike, Publisher, TriggeredLine

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Checkout:
    """One triggered basket, handed to deliver."""

    event_id: str
    trigger: Trigger
    basket: Basket
    frame: Frame | None
    catalog_version: str | None
    timings_ms: dict


class CheckoutLine(TriggeredLine):
    ITEM = "basket"
    WAITING = "baskets"
    RESULTS = "baskets"
    COUNTERS = ("charged", "attendant", *OUTCOMES, "items_charged")

    def __init__(self, name: str, device_id: str, camera: Camera, detector: DetectorLike, cascade, rule: DefectRule,
                 rules: CheckoutRules, catalog, publisher: Publisher | None, *, crops: CropSettings = CropSettings(),
                 queue_size: int = 16, model_name: str = "", stall_s: float = 2.0, burst_frames: int = 1):
        """cascade: the product classifier (its labels are the catalog's); rule: the detector's
        score thresholds; catalog: an agent.catalog.Catalog (None: every product is unknown)."""
        if cascade is None:
            raise ValueError(f"checkout line {name}: needs a product classifier")
        super().__init__(name, device_id, camera, detector, rule, publisher, crops=crops, queue_size=queue_size,
                         model_name=model_name, cascade=cascade, stall_s=stall_s, burst_frames=burst_frames)
        self.rules = rules
        self._catalog = catalog
        # What the last charged basket left on the platter; only the inspect thread touches it.
        self._platter: Platter | None = None

    @property
    def catalog(self):
        return self._catalog

    def _swapped(self, extra: dict) -> None:
        if "catalog" in extra:
            self._catalog = extra["catalog"]

    # -- decide ------------------------------------------------------------------------
    def _failed(self, trigger: Trigger, frame: Frame | None) -> Checkout:
        return self._done(trigger, no_read("internal error", trigger.weight_change_g), frame, {})

    def _process(self, trigger: Trigger, frame: Frame | None, t_captured: float) -> Checkout:
        timings = {"capture": (t_captured - trigger.t_mono) * 1000}
        basket = None
        if frame is None:
            basket = no_read("no frame from the camera", trigger.weight_change_g)
        else:
            rule, unsure_from = self.rule, self.rules.unsure_from
            try:
                found = self._detect(frame, timings, min(rule.lowest_threshold, unsure_from or 1.0))
            except BadFrame as exc:
                self.counters["inference_errors"] += 1
                basket = no_read(f"bad frame: {exc}", trigger.weight_change_g)
            except RuntimeError as exc:
                self.counters["inference_errors"] += 1
                log.error("line %s: inference failed on basket %d: %s", self.name, trigger.seq, exc)
                basket = no_read("inference error", trigger.weight_change_g)
        timings["detect"] = (time.monotonic() - t_captured) * 1000
        if basket is None:
            sure = [d for d in found if d.score >= rule.threshold_for(d.label)]
            unsure = [d for d in found if d.score < rule.threshold_for(d.label)]
            started = time.monotonic()
            basket = decide(sure, self._catalog, self.rules, trigger.weight_g, trigger.weight_change_g, self._platter,
                            unsure)
            timings["decide"] = (time.monotonic() - started) * 1000
        return self._done(trigger, basket, frame, timings)

    def _done(self, trigger: Trigger, basket: Basket, frame: Frame | None, timings: dict) -> Checkout:
        self._platter = basket.platter_after(trigger.weight_g)
        catalog = self._catalog
        checkout = Checkout(str(uuid.uuid4()), trigger, basket, frame,
                            catalog.info.version if catalog is not None else None, timings)
        c = self.counters
        c["baskets"] += 1
        c[basket.outcome.value] += 1
        if basket.charges:
            c["charged"] += 1
            c["items_charged"] += len(basket.items) - basket.carried
        else:
            c["attendant"] += 1
            log.warning("line %s: basket %d to the attendant: %s (%s)", self.name, trigger.seq, basket.outcome.value,
                        basket.reason, extra={"line": self.name, "event_id": checkout.event_id})
        timings["total"] = (time.monotonic() - trigger.t_mono) * 1000
        return checkout

    # -- deliver -----------------------------------------------------------------------
    def _deliver(self, checkout: Checkout) -> None:
        self._publisher.publish_event(self.name, self.event_payload(checkout))
        if checkout.frame is None:
            return
        for index, item in enumerate(checkout.basket.items[: self._crops.max_per_event]):
            meta = {"basket_id": checkout.trigger.seq, "label": item.detection.label,
                    "score": round(item.detection.score, 4)}
            if item.label is not None:
                meta["class"], meta["probability"] = item.label, round(item.probability, 4)
            if item.sku is not None:
                meta["sku"] = item.sku
            self._publish_crop(checkout.frame, checkout.event_id, index, item.detection.box, meta)

    def event_payload(self, checkout: Checkout) -> dict:
        basket, trigger, frame = checkout.basket, checkout.trigger, checkout.frame
        weight = basket.weight
        return {
            "schema": EVENT_SCHEMA, "kind": "basket", "event_id": checkout.event_id, "device_id": self.device_id,
            "line": self.name, "basket_id": trigger.seq, "ts": round(trigger.t_wall, 3),
            "trigger": {"source": trigger.source, "seq": trigger.seq, "weight_g": trigger.weight_g,
                        "weight_change_g": trigger.weight_change_g},
            "result": basket.outcome.value,
            "action": "charge" if basket.charges else "attendant",
            "reason": basket.reason,
            "items": [{"sku": line.sku, "name": line.name, "quantity": line.quantity,
                       "priced_by_weight": line.priced_by_weight, "unit_price_cents": line.unit_price_cents,
                       "weight_g": line.weight_g, "line_total_cents": line.line_total_cents}
                      for line in basket.lines],
            "total_cents": basket.total_cents,
            "currency": basket.currency,
            "weight": {"measured_change_g": _round(weight.measured_change_g), "expected_g": weight.expected_g,
                       "tolerance_g": weight.tolerance_g, "within": weight.within},
            "carried_items": basket.carried,
            "weight_resolved": None if not (basket.added_by_weight or basket.dropped_by_weight) else
                {"added": basket.added_by_weight, "dropped": basket.dropped_by_weight},
            "detections": [
                {"box": [round(v, 1) for v in item.detection.box], "score": round(item.detection.score, 4),
                 "label": item.label, "probability": None if item.probability is None else round(item.probability, 4),
                 "sku": item.sku, "carried": item.carried,
                 "crop": index if frame is not None and index < self._crops.max_per_event else None}
                for index, item in enumerate(basket.items)],
            "catalog": checkout.catalog_version,
            "frame": None if frame is None else self._frame_payload(frame),
            "model": self._model_name,
            "timings_ms": {k: round(v, 2) for k, v in checkout.timings_ms.items()},
        }

    def health(self) -> dict:
        catalog = self._catalog
        return {"type": "checkout", **super().health(),
                "catalog": None if catalog is None else {"version": catalog.info.version, "path": str(catalog.path)},
                "platter_items": 0 if self._platter is None else len(self._platter.skus)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
