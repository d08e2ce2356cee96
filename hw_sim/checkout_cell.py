"""The simulated self-checkout around a real `edge-agent run`, for the demo, tests and benchmark.

Real parts everywhere: a mosquitto process, a SimScale on a pseudo-terminal (MT-SICS or Toledo),
a camera serving an MJPEG stream of the platter (read by the agent's `stream` source through
OpenCV's FFmpeg backend, and by its motion trigger), SimPos as the POS behind the line's durable
webhook, the product database built from hw_sim.products, and the agent as a child process.

One basket, as a shopper does it:

    the empty platter (under the basket's light) -> a hand reaches in and puts the products down
    (four or five frames) -> the camera shows them and the scale reads the new weight as moving for
    settle_s, then stable -> the agent's all_of(motion,
    scale) fires -> basket event (MQTT) + POS call -> the products are taken off (the weight goes
    back down: no trigger) -> a pause for the scale to settle empty -> the next basket

Baskets are CheckoutRenderer scenes of a seed the models never saw (training used 11000-16039,
the model tests 19000). Each item's real weight varies around its product's nominal weight
(packaged goods by 0.7 %, produce by up to 20 %), and what a right answer is comes from the
ground truth: the sku quantities, and the price the POS should charge, or `weigh_separately`
when produce sold by weight lies with other products.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from agent.control.ctl import build_request
from agent.deliver.mqtt import MqttRequester
from agent.postprocess.checkout import price_by_weight

from .agent_process import AgentProcess
from .broker import MosquittoBroker
from .camera import SimCamera, encode_jpeg
from .checkout_scene import CheckoutRenderer
from .pos import SimPos
from .products import by_sku, write_catalog
from .scale import SimScale
from .subscriber import MqttRecorder

REPO = Path(__file__).resolve().parents[1]
DETECTOR = REPO / "models" / "checkout-detector" / "int8"
CLASSIFIER = REPO / "models" / "checkout-products" / "int8"
DEVICE_ID = "sim-checkout"
LINE = "checkout"
HELD_OUT_SEED = 23000


@dataclass(frozen=True)
class CheckoutSettings:
    seed: int = HELD_OUT_SEED
    protocol: str = "mtsics"  # or "toledo"
    settle_s: float = 0.3  # the weight reads as moving this long after the products land
    poll_interval_ms: float = 30  # MT-SICS: how often the agent asks for the weight
    stream_fps: float = 15.0
    window_ms: float = 1500  # motion and the settled weight within this
    gap_s: float = 1.0  # after the platter is cleared, before the next basket
    result_timeout_s: float = 5.0  # a basket without a POS call by then is counted missing
    log_level: str = "WARNING"
    sync: dict | None = None  # the agent config's `sync` section (hw_sim.cloud serves it); None: no sync


@dataclass(frozen=True)
class Basket:
    index: int
    skus: tuple[str, ...]  # the ground truth, one per product on the platter
    weights_g: tuple[float, ...]  # each product's real weight
    jpeg: bytes  # the platter with the products
    empty: tuple[bytes, ...]  # the empty platter under the same light, a few noise variants
    placing: tuple[bytes, ...]  # the hand reaching in, then putting the products down
    truth_boxes: tuple[tuple[int, int, int, int], ...] = ()  # per product, as skus

    @property
    def weight_g(self) -> float:
        return round(sum(self.weights_g))

    def expected(self) -> tuple[str, Counter, int | None]:
        """(result, sku quantities, total in cents or None) a right answer gives."""
        counts = Counter(self.skus)
        produce = [sku for sku in counts if by_sku(sku).priced_by_weight]
        if produce and len(counts) > 1:
            return "weigh_separately", counts, None
        if produce:
            return "ok", counts, price_by_weight(by_sku(produce[0]).price_cents, self.weight_g)
        return "ok", counts, sum(by_sku(sku).price_cents * n for sku, n in counts.items())


def basket_of(skus: list[str], seed: int, index: int = 1) -> Basket:
    """One basket of these products (nominal weights), drawn by renderer seed `seed`."""
    renderer = CheckoutRenderer(seed=seed)
    scene = renderer.render(list(skus))
    empty = tuple(encode_jpeg(renderer.render_empty(), 90) for _ in range(3))
    return Basket(index, tuple(item.sku for item in scene.items), tuple(by_sku(item.sku).weight_g for item in scene.items),
                  encode_jpeg(scene.image, 90), empty, (), tuple(item.box for item in scene.items))


def make_baskets(count: int, seed: int = HELD_OUT_SEED, hands: bool = True, lifted: bool = True) -> list[Basket]:
    """count baskets of renderer seed `seed`, with their products' real weights; hands: with the
    frames of the hand putting them down (the same scenes and weights either way). The renderer
    draws a hand over the products in 15% of its scenes: lifted (the default) shows such a scene
    the moment after the hand let go as the basket's settled frame, and the hand's frame among the
    placing ones; lifted=False keeps the hand in the settled frame."""
    renderer = CheckoutRenderer(seed=seed)
    rng = np.random.default_rng(seed + 1)
    baskets = []
    for index in range(count):
        drawn = renderer.render()
        scene = drawn.lifted if lifted and drawn.lifted is not None else drawn
        empties = [renderer.render_empty() for _ in range(3)]
        empty = tuple(encode_jpeg(image, 90) for image in empties)
        box = scene.items[0].box
        target = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        hand = seed * 1000 + index  # the hand's own random stream: the scenes stay the renderer's
        placing = (*(encode_jpeg(renderer.with_hand(empties[0], target, hand, reach), 90) for reach in (0.5, 0.8)),
                   *(encode_jpeg(renderer.with_hand(scene.image, target, hand, reach), 90) for reach in (1.0, 0.7)),
                   *((encode_jpeg(drawn.image, 90),) if scene is not drawn else ())) if hands else ()
        skus = tuple(item.sku for item in scene.items)
        weights = []
        for sku in skus:
            product = by_sku(sku)
            spread = rng.uniform(0.8, 1.2) if product.priced_by_weight else float(np.clip(rng.normal(1, 0.007), 0.98, 1.02))
            weights.append(product.weight_g * spread)
        baskets.append(Basket(index + 1, skus, tuple(weights), encode_jpeg(scene.image, 90), empty, placing,
                              tuple(item.box for item in scene.items)))
    return baskets


@dataclass
class BasketResult:
    basket: Basket
    event: dict | None  # the basket event the POS received (None: none came)
    pos_calls: int  # POST attempts for it
    settled_mono: float  # when the scale began to read the weight as stable
    pos_mono: float | None  # when the POS received it
    mqtt_event: bool = False  # an independent MQTT subscriber got it too

    @property
    def correct(self) -> bool:
        """Decided right: a chargeable basket charged, with exactly its products, quantities and
        total; one that cannot be charged (produce among other products) not charged, sent to the
        attendant (for whatever reason it gives; see strict)."""
        if self.event is None:
            return False
        result, counts, total = self.basket.expected()
        if result != "ok":
            return self.event["action"] == "attendant"
        return self.event["result"] == "ok" and _counts(self.event) == counts and self.event["total_cents"] == total

    @property
    def strict(self) -> bool:
        """correct, with the expected result, and the products listed right for the attendant too."""
        result, counts, _ = self.basket.expected()
        return self.correct and self.event["result"] == result and _counts(self.event) == counts

    @property
    def charged_wrong(self) -> bool:
        """Charged, and not what was on the platter or not its price: the error that must not happen."""
        return self.event is not None and self.event["action"] == "charge" and not self.correct


def _counts(event: dict) -> Counter:
    return Counter({item["sku"]: item["quantity"] for item in event["items"]})


@dataclass
class Scorecard:
    results: list[BasketResult] = field(default_factory=list)

    @property
    def baskets(self) -> int:
        return len(self.results)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.results)

    @property
    def accuracy(self) -> float:
        return self.correct / self.baskets if self.baskets else float("nan")

    def latencies(self, kind: str) -> list[float]:
        """trigger: the agent's trigger -> basket decided (its timings); pos: trigger -> POS received;
        settled: the scale's weight stable -> POS received (adds the scale's polling and confirmation)."""
        values = []
        for r in self.results:
            if r.event is None:
                continue
            if kind == "trigger":
                values.append(r.event["timings_ms"]["total"])
            elif r.pos_mono is not None:
                start = r.event["_trigger_mono"] if kind == "pos" else r.settled_mono
                values.append((r.pos_mono - start) * 1000)
        return values

    def render(self) -> str:
        results = self.results
        expected = Counter(r.basket.expected()[0] for r in results)
        got = Counter(r.event["result"] for r in results if r.event is not None)
        ok_expected = [r for r in results if r.basket.expected()[0] == "ok"]
        rows = [
            ("baskets", f"{self.baskets} ({sum(len(r.basket.skus) for r in results)} products)"),
            ("decided right (charged: items, quantities, total)", f"{self.correct} ({100 * self.accuracy:.2f}%)"),
            ("  and the attendant's product list right too", f"{sum(r.strict for r in results)}"),
            ("charged right", f"{sum(r.correct for r in ok_expected)} of {len(ok_expected)} chargeable"),
            ("charged wrong", sum(r.charged_wrong for r in results)),
            ("to the attendant: weigh separately (produce with other items)",
             f"{got.get('weigh_separately', 0)} (expected {expected.get('weigh_separately', 0)})"),
            ("to the attendant: other", ", ".join(f"{k} {v}" for k, v in sorted(got.items())
                                                  if k not in ("ok", "weigh_separately")) or "0"),
            ("baskets without a POS call", sum(r.event is None for r in results)),
            ("POS calls per basket (same Idempotency-Key)", _spread([r.pos_calls for r in results if r.event])),
            ("events received by an independent subscriber", f"{sum(r.mqtt_event for r in results)} / {self.baskets}"),
        ]
        for name, kind in (("trigger -> basket decided p50 / p99", "trigger"),
                           ("trigger -> POS received p50 / p99", "pos"),
                           ("weight stable -> POS received p50 / p99", "settled")):
            values = self.latencies(kind)
            rows.append((name, f"{percentile(values, 50):.1f} ms / {percentile(values, 99):.1f} ms"
                               f" (max {max(values, default=float('nan')):.1f})"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def _spread(values: list[int]) -> str:
    return f"{min(values)}-{max(values)}" if values and min(values) != max(values) else str(values[0] if values else 0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def agent_config(workdir: Path, broker: MosquittoBroker, camera: SimCamera, scale: SimScale, pos: SimPos,
                 settings: CheckoutSettings) -> dict:
    return {
        "device": {"id": DEVICE_ID, "site": "simulator"},
        "log_level": settings.log_level,
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "edge"},
        "outbox": {"path": str(workdir / "outbox.db")},
        "models": {"products-detector": {"path": str(DETECTOR)}, "products": {"path": str(CLASSIFIER)}},
        "catalog": {"path": str(workdir / "catalog.db")},
        "cameras": {"platter": {"type": "stream", "url": camera.stream_url, "timeout_ms": 1000}},
        "lines": {LINE: {
            "type": "checkout", "camera": "platter", "model": "products-detector", "classifier": "products",
            "trigger": {"type": "all_of", "window_ms": settings.window_ms, "members": [
                {"type": "motion", "min_area": 0.005, "cooldown_ms": 500, "repeat_ms": 500},
                {"type": "scale", "port": str(scale.link), "protocol": settings.protocol, "threshold_g": 5,
                 "poll_interval_ms": settings.poll_interval_ms, "reply_timeout_ms": 300}]},
            "webhooks": [{"name": "pos", "url": pos.url, "timeout_ms": 1000, "backoff_ms": 100, "backoff_max_ms": 2000}],
        }},
        **({"sync": settings.sync} if settings.sync is not None else {}),
    }


class CheckoutCell:
    """Context manager: simulator + `edge-agent run` up; `run(baskets)` puts them down and scores them."""

    def __init__(self, settings: CheckoutSettings = CheckoutSettings(), workdir: Path | None = None):
        self.settings = settings
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edge-checkout-")
        self.workdir = Path(workdir or self._tmp.name)
        self._stack: list = []
        self._mono_minus_wall = 0.0

    def __enter__(self) -> CheckoutCell:
        try:
            # Persistent, as a production broker: the recorder misses nothing while the broker is away.
            self.broker = self._start(MosquittoBroker(workdir=self.workdir / "broker", persistent=True))
            self.camera = self._start(SimCamera(stream_fps=self.settings.stream_fps))
            self.scale = self._start(SimScale(self.workdir / "scale", protocol=self.settings.protocol,
                                              settle_s=self.settings.settle_s))
            self.pos = self._start(SimPos())
            self.recorder = self._start(MqttRecorder(self.broker.host, self.broker.port, f"edge/{DEVICE_ID}/#",
                                                     persistent_session=True))
            write_catalog(self.workdir / "catalog.db")
            self.config_path = self.workdir / "agent.yaml"
            self.config_path.write_text(yaml.safe_dump(
                agent_config(self.workdir, self.broker, self.camera, self.scale, self.pos, self.settings), sort_keys=False))
            self.agent = AgentProcess(self.workdir, self.config_path)
            self.camera.show(list(make_baskets(1, self.settings.seed + 999)[0].empty))
            self.agent.start()
            self._stack.append(self._stop_agent)
            self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, component):
        component.start()
        self._stack.append(component.stop)
        return component

    def _stop_agent(self) -> None:
        if self.agent.running:
            self.agent.stop()

    def __exit__(self, *exc) -> None:
        while self._stack:
            try:
                self._stack.pop()()
            except Exception:  # keep stopping the rest
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- the agent's side ------------------------------------------------------------------
    def command(self, name: str, args: dict | None = None, timeout_s: float = 5.0) -> dict | None:
        """One command to the agent through the broker; its reply (None: no reply in time)."""
        with MqttRequester(self.broker.host, self.broker.port, reply_topic=f"edge/{DEVICE_ID}/replies/cell") as req:
            raw = req.request(f"edge/{DEVICE_ID}/cmd/{name}", json.dumps(build_request(DEVICE_ID, name, args or {})).encode(),
                              timeout_s=timeout_s)
        return None if raw is None else json.loads(raw)

    def status(self, timeout_s: float = 5.0) -> dict | None:
        """The agent's `status` reply data (None: no reply)."""
        reply = self.command("status", timeout_s=timeout_s)
        return None if reply is None else reply["data"]

    def wait_ready(self, timeout_s: float = 90.0) -> dict:
        """Until the line has warmed up, the camera is online and the scale has its empty reference."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            if not self.agent.running:
                raise RuntimeError(f"the agent exited; log:\n{self.agent.log_tail()}")
            try:
                last = self.status(2.0)
            except ConnectionError:
                last = None
            if last is not None:
                line = last["lines"][LINE]
                scale = last["triggers"][LINE]["members"][1]
                if line["warm"] and last["sources"]["platter"]["online"] and scale["reference_g"] is not None:
                    return last
            time.sleep(0.3)
        raise RuntimeError(f"the checkout agent was not ready within {timeout_s} s ({last}); log:\n{self.agent.log_tail()}")

    # -- baskets ---------------------------------------------------------------------------
    def put_down(self, basket: Basket, weight_g: float | None = None) -> float:
        """The products land on the platter (the scale then reads weight_g: the basket's own by
        default); returns when the scale starts reading them as stable."""
        self.camera.play(list(basket.placing), basket.jpeg)
        self.scale.place(basket.weight_g if weight_g is None else weight_g)
        return time.monotonic() + self.settings.settle_s

    def take_off(self, next_empty: tuple[bytes, ...]) -> None:
        self.camera.show(list(next_empty))
        self.scale.place(0.0)

    def run(self, baskets: list[Basket], progress=None, wait_for: str = "pos") -> Scorecard:
        """Each basket put down, its result awaited (wait_for "pos": the POS call; "mqtt": the event,
        for a run with the POS down), then taken off. Scored against the ground truth."""
        card = Scorecard()
        self.camera.show(list(baskets[0].empty))
        time.sleep(self.settings.gap_s)
        for i, basket in enumerate(baskets):
            seen = self.arrived(wait_for)
            placed_wall = time.time()
            settled = self.put_down(basket)
            event, t_mono = self.wait_for_result(wait_for, seen, placed_wall)
            self.take_off(baskets[i + 1].empty if i + 1 < len(baskets) else basket.empty)
            card.results.append(self._result(basket, event, t_mono if wait_for == "pos" else None, settled))
            if progress is not None:
                progress(i + 1, len(baskets))
            time.sleep(self.settings.gap_s + self.settings.settle_s)
        self._wait_for_mqtt(card, 10.0 if self.broker.running else 0.0)
        return card

    def arrived(self, where: str = "pos") -> list[tuple[dict, float]]:
        """(event, arrival time) of every basket event the POS (or the MQTT subscriber) has seen."""
        if where == "pos":
            return [(r.json(), r.t_mono) for r in self.pos.requests()]
        return [(m.json(), m.t_mono) for m in self.recorder.messages(f"edge/{DEVICE_ID}/events/{LINE}")]

    def wait_for_result(self, where: str, seen: list, since_wall: float, timeout_s: float | None = None):
        """(event, arrival time) of the first basket event not in seen (an arrived() list) whose
        trigger came at since_wall or later; (None, None) if none by timeout_s."""
        known = {event["event_id"] for event, _ in seen}
        deadline = time.monotonic() + (self.settings.result_timeout_s if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            for event, t_mono in self.arrived(where):
                if event["event_id"] not in known and event["ts"] >= since_wall - 0.05:
                    return event, t_mono
            time.sleep(0.005)
        return None, None

    def _result(self, basket: Basket, event: dict | None, pos_mono: float | None, settled: float) -> BasketResult:
        if event is None:
            return BasketResult(basket, None, 0, settled, None)
        # The trigger's wall time on this machine's monotonic clock (the agent's is the same clock).
        event["_trigger_mono"] = event["ts"] - time.time() + time.monotonic()
        return BasketResult(basket, event, len(self.pos.attempts(event["event_id"])), settled, pos_mono)

    def _wait_for_mqtt(self, card: Scorecard, timeout_s: float = 10.0) -> None:
        wanted = {r.event["event_id"] for r in card.results if r.event is not None}
        deadline = time.monotonic() + timeout_s
        while True:
            received = {m.json()["event_id"] for m in self.recorder.messages(f"edge/{DEVICE_ID}/events/{LINE}")}
            if wanted <= received or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for r in card.results:
            r.mqtt_event = r.event is not None and r.event["event_id"] in received


def accuracy_summary(card: Scorecard) -> dict:
    """The figures a benchmark prints and a test asserts floors on."""
    return {"baskets": card.baskets, "correct": card.correct, "accuracy": card.accuracy,
            "charged_wrong": sum(r.charged_wrong for r in card.results),
            "missing": sum(r.event is None for r in card.results),
            "trigger_p50_ms": percentile(card.latencies("pos"), 50), "trigger_p99_ms": percentile(card.latencies("pos"), 99),
            "mean_pos_calls": statistics.fmean([r.pos_calls for r in card.results if r.event] or [0])}
