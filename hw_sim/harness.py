"""The whole simulated inspection cell around a real agent, for the demo, tests and benchmarks.

Real parts everywhere the real thing runs here: a mosquitto process, a pymodbus TCP server,
an HTTP camera, gpiozero's MockFactory pins, and the agent's own config loader and App.
The agent runs in this process because gpiozero's mock pins live in one process.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .broker import MosquittoBroker
from .camera import SimCamera
from .conveyor import BeltSettings, Conveyor, Part
from .plc import PlcResult, SimPlc
from .ports import server_port
from .scene import PartRenderer
from .subscriber import MqttRecorder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "inspection-detector" / "int8"


def card_threshold(model: Path = DEFAULT_MODEL, fallback: float = 0.4) -> float:
    """The operating threshold the model card recommends (card.json beside the IR folders)."""
    try:
        return float(json.loads((model.parent / "card.json").read_text())["operating_threshold"])
    except (OSError, ValueError, KeyError):
        return fallback
SENSOR_PIN = 17
ENCODER_COUNTS_PER_M = 1000
REJECT_PIN = 27
PLC_FIRST_TRIGGER_ID = 70_001  # far from the agent's own numbers, so an echo of those shows
DEVICE_ID = "sim-box"
LINE = "inspect"


@dataclass(frozen=True)
class CellSettings:
    seed: int = 4242
    defect_rate: float = 0.35
    belt: BeltSettings = BeltSettings()
    model: Path = DEFAULT_MODEL
    threshold: float = field(default_factory=card_threshold)
    # "delay" or "encoder": the reject fires when the part reaches the station (belt.reject_distance_m
    # downstream), timed from belt speed or from the SimPlc's encoder register. None: at once.
    timed_reject: str | None = None
    control: dict | None = None  # the agent config's `control` section; None: its defaults
    # "gpio": a photoelectric sensor on a mock pin; "plc": the SimPlc raises part present and writes
    # each part's trigger id (from PLC_FIRST_TRIGGER_ID), and the agent's PLC trigger polls it.
    trigger: str = "gpio"
    sync: dict | None = None  # the agent config's `sync` section (hw_sim.cloud serves it); None: no sync


def agent_config(broker: MosquittoBroker, plc: SimPlc, camera: SimCamera, model: Path, threshold: float,
                 outbox: Path | None = None, belt: BeltSettings | None = None, timing_mode: str = "delay",
                 trigger: str = "gpio") -> dict:
    """outbox: the outbox file; give every run its own (the default is the device's /var/lib path)."""
    return {
        "device": {"id": DEVICE_ID, "site": "simulator"},
        "log_level": "WARNING",
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "edge"},
        **({"outbox": {"path": str(outbox)}} if outbox is not None else {}),
        "plc": {"host": "127.0.0.1", "port": plc.port, "timeout_ms": 250},
        "gpio": {"pin_factory": "mock"},
        "models": {"defects": {"path": str(model), "device": "CPU"}},
        "cameras": {"cam0": {"type": "http_snapshot", "url": camera.url, "timeout_ms": 500}},
        "lines": {
            LINE: {
                "camera": "cam0",
                "model": "defects",
                "trigger": {"type": "plc", "poll_ms": 10} if trigger == "plc" else
                           {"type": "gpio", "pin": SENSOR_PIN, "edge": "rising", "debounce_ms": 5},
                "default_threshold": threshold,
                "reject_output": {"pin": REJECT_PIN, "pulse_ms": 30},
                **({"reject_timing": {"mode": "delay", "distance_m": belt.reject_distance_m,
                                      "belt_speed_mps": belt.belt_speed_mps} if timing_mode == "delay" else
                    {"mode": "encoder", "encoder_counts": round(belt.reject_distance_m * ENCODER_COUNTS_PER_M)}}
                   if belt is not None else {}),
            }
        },
    }


@dataclass
class Scorecard:
    parts: int
    defective: int
    critical: int
    rejected_correct: int  # defective and rejected
    rejected_wrong: int  # good and rejected (false reject)
    missed: int  # defective and passed
    missed_critical: int
    no_reads: int
    no_result: int  # no PLC result at all
    late: int  # result written after the part reached the reject station
    events_received: int
    latency_ms: list[float] = field(default_factory=list, repr=False)  # sensor edge -> PLC result

    def percentile(self, q: float) -> float:
        if not self.latency_ms:
            return float("nan")
        values = sorted(self.latency_ms)
        return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]

    @property
    def good(self) -> int:
        return self.parts - self.defective

    @property
    def false_reject_rate(self) -> float:
        return self.rejected_wrong / self.good if self.good else 0.0

    def render(self) -> str:
        rows = [
            ("parts", self.parts),
            ("defects present (parts)", f"{self.defective} ({self.critical} with a critical defect)"),
            ("rejected: correct", self.rejected_correct),
            ("rejected: wrong (good part)", f"{self.rejected_wrong} ({100 * self.false_reject_rate:.1f}% of good parts)"),
            ("missed: defective part passed", f"{self.missed} ({self.missed_critical} critical)"),
            ("no reads (rejected)", self.no_reads),
            ("parts without a PLC result", self.no_result),
            ("results after the part reached the reject station", self.late),
            ("events received by an independent subscriber", f"{self.events_received} / {self.parts}"),
            ("trigger -> PLC result p50 / p99", f"{self.percentile(50):.1f} ms / {self.percentile(99):.1f} ms"),
            ("                       mean / max", f"{statistics.fmean(self.latency_ms) if self.latency_ms else float('nan'):.1f} ms"
                                                  f" / {max(self.latency_ms, default=float('nan')):.1f} ms"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def score(parts: list[Part], results: dict[int, PlcResult], events: dict[int, dict]) -> Scorecard:
    card = Scorecard(
        parts=len(parts), defective=sum(not p.good for p in parts), critical=sum(p.critical for p in parts),
        rejected_correct=0, rejected_wrong=0, missed=0, missed_critical=0, no_reads=0, no_result=0, late=0,
        events_received=sum(1 for p in parts if p.index in events),
    )
    for part in parts:
        result = results.get(part.index)
        if result is None:
            card.no_result += 1
            continue
        card.latency_ms.append((result.t_mono - part.t_edge) * 1000)
        if result.t_mono > part.t_at_station:
            card.late += 1
        if result.result_code == 3:
            card.no_reads += 1
        if result.reject:
            if part.good:
                card.rejected_wrong += 1
            else:
                card.rejected_correct += 1
        elif not part.good:
            card.missed += 1
            card.missed_critical += part.critical
    return card




class SimulatedCell:
    """Context manager: simulator + agent running; `run(n)` moves n parts and scores them."""

    def __init__(self, settings: CellSettings = CellSettings(), workdir: Path | None = None, broker_up: bool = True):
        """broker_up=False: the agent starts while the broker is down; `broker.start()` later."""
        self.settings = settings
        self._broker_up = broker_up
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edge-sim-")
        self.workdir = Path(workdir or self._tmp.name)
        self._stack: list = []

    def __enter__(self) -> SimulatedCell:
        from gpiozero.pins.mock import MockFactory

        from agent.app import App
        from agent.config import load_config

        try:
            self.broker = MosquittoBroker(port=server_port(), workdir=self.workdir / "broker")
            self._stack.append(self.broker.stop)
            if self._broker_up:
                self.broker.start()
            self.plc = self._start(SimPlc(first_trigger_id=PLC_FIRST_TRIGGER_ID))
            self.camera = self._start(SimCamera())
            self.pins = MockFactory()
            self.config_path = self.workdir / "agent.yaml"
            config = agent_config(self.broker, self.plc, self.camera, self.settings.model, self.settings.threshold,
                                  outbox=self.workdir / "outbox.db",
                                  belt=self.settings.belt if self.settings.timed_reject else None,
                                  timing_mode=self.settings.timed_reject or "delay", trigger=self.settings.trigger)
            self.plc.set_belt(self.settings.belt.belt_speed_mps, ENCODER_COUNTS_PER_M)
            if self.settings.control is not None:
                config["control"] = self.settings.control
            if self.settings.sync is not None:
                config["sync"] = self.settings.sync
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            self.recorder = MqttRecorder(self.broker.host, self.broker.port, f"edge/{DEVICE_ID}/#")
            if self._broker_up:
                self._start(self.recorder)
            else:
                self._stack.append(self.recorder.stop)
            self.app = App(load_config(self.config_path), pin_factory=self.pins, config_path=self.config_path)
            self._stack.append(self.app.stop)
            self.app.start()
            renderer = PartRenderer(seed=self.settings.seed, defect_rate=self.settings.defect_rate)
            sensor = self.plc.part_sensor() if self.settings.trigger == "plc" else self.pins.pin(SENSOR_PIN)
            self.conveyor = Conveyor(renderer, self.camera, sensor, self.settings.belt)
        except BaseException:
            self.__exit__()
            raise
        self._next_index = 1
        self._parts: list[Part] = []
        self._index_of_trigger_id: dict[int, int] | None = None
        return self

    def _start(self, component):
        component.start()
        self._stack.append(component.stop)
        return component

    def __exit__(self, *exc) -> None:
        while self._stack:
            self._stack.pop()()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def make_parts(self, count: int) -> list[Part]:
        parts = self.conveyor.make_parts(count, first_index=self._next_index)
        self._next_index += count
        self._parts.extend(parts)
        return parts

    def run(self, parts: list[Part], progress=None, settle_s: float = 10.0) -> Scorecard:
        self.conveyor.run(parts, progress)
        ids = {p.index for p in parts}
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            results = self.results_by_id()
            events = self.events_by_id()
            if ids <= results.keys() and ids <= events.keys():
                break
            time.sleep(0.1)
        return score(parts, self.results_by_id(), self.events_by_id())

    def results_by_id(self) -> dict[int, PlcResult]:
        """By part index: the first result written for the part's inspection id (the one that counts)."""
        by_id: dict[int, PlcResult] = {}
        for result in self.plc.results():
            by_id.setdefault(self._part_index(result.inspection_id), result)
        return by_id

    def events_by_id(self) -> dict[int, dict]:
        """By part index."""
        events = {}
        for message in self.recorder.messages(f"edge/{DEVICE_ID}/events/{LINE}"):
            payload = message.json()
            events[self._part_index(payload["inspection_id"])] = payload
        return events

    def _part_index(self, inspection_id: int) -> int:
        """The part an echoed inspection id belongs to. The n-th sensor edge is inspection n; on a
        PLC-triggered line the id is the part's trigger id, which the PLC wrote. An id that is no
        part's (a command trigger) stays as it is."""
        if self.settings.trigger != "plc":
            return inspection_id
        if self._index_of_trigger_id is None or inspection_id not in self._index_of_trigger_id:
            self._index_of_trigger_id = {p.trigger_id: p.index for p in self._parts if p.trigger_id is not None}
        return self._index_of_trigger_id.get(inspection_id, inspection_id)
