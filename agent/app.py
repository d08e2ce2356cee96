"""The composition root: config -> objects -> running lines, and an ordered shutdown.

Nothing else in the agent builds collaborators; everything receives them as arguments.
"""

from __future__ import annotations

import logging
import time

from . import __version__
from .act.plc import ModbusTcpPlc, PlcRegisterMap
from .config import AgentConfig
from .deliver.mqtt import MqttPublisher, MqttSettings
from .gpio import EdgeInput, PulseOutput, make_pin_factory
from .infer.cascade import Cascade
from .infer.engine import Classifier, Detector, Model
from .ingest.camera import HttpSnapshotCamera
from .ingest.interval_trigger import IntervalTrigger
from .lines.inspection import CropSettings, InspectionLine
from .postprocess.inspection_rule import DefectRule

log = logging.getLogger(__name__)


class App:
    """All of one device's lines and links. Build (may raise user errors), start, stop."""

    def __init__(self, config: AgentConfig, *, pin_factory=None):
        self.config = config
        self._started_at: float | None = None
        self._closers: list = []  # undone in reverse order on stop, also after a failed build
        try:
            self._build(config, pin_factory)
        except BaseException:
            self._close_all()
            raise

    def _build(self, config: AgentConfig, pin_factory) -> None:
        # Models first: a missing or broken model is the likeliest user error, and is found
        # before anything touches the line. Triggered lines want the LATENCY hint.
        def load(name: str) -> Model:
            model = config.models[name]
            return Model(model.path, device=model.device, performance_hint="LATENCY", cache_dir=config.model_cache_dir)

        detectors, cascades = {}, {}
        for line_name, line_config in config.lines.items():
            detectors[line_name] = Detector(load(line_config.model))
            if line_config.severity_model:
                cascades[line_name] = Cascade(Classifier(load(line_config.severity_model)))

        self.publisher = MqttPublisher(
            MqttSettings(
                host=config.mqtt.host, port=config.mqtt.port, topic_prefix=config.mqtt.topic_prefix,
                device_id=config.device.id, client_id=config.mqtt.client_id or f"edge-agent-{config.device.id}",
                keepalive_s=config.mqtt.keepalive_s, username=config.mqtt.username, password=config.mqtt.password,
                tls_ca=config.mqtt.tls.ca if config.mqtt.tls else None,
                tls_cert=config.mqtt.tls.cert if config.mqtt.tls else None,
                tls_key=config.mqtt.tls.key if config.mqtt.tls else None,
            ),
            version=__version__,
        )
        self._closers.append(self.publisher.close)
        registers = config.plc.registers
        self.plc = ModbusTcpPlc(
            config.plc.host, config.plc.port, device_id=config.plc.device_id, timeout_s=config.plc.timeout_ms / 1000,
            register_map=PlcRegisterMap(registers.inspection_id, registers.result_code, registers.defect_count, registers.reject_coil),
        )
        self._closers.append(self.plc.close)

        needs_gpio = any(line.trigger.type == "gpio" or line.reject_output for line in config.lines.values())
        if pin_factory is None and needs_gpio:
            pin_factory = make_pin_factory(config.gpio.pin_factory)
        self.pin_factory = pin_factory
        self.cameras = {
            name: HttpSnapshotCamera(name, cam.url, timeout_s=cam.timeout_ms / 1000) for name, cam in config.cameras.items()
        }
        self.lines: dict[str, InspectionLine] = {}
        self._inputs: list[tuple[InspectionLine, object]] = []
        for name, line_config in config.lines.items():
            reject_output = None
            if line_config.reject_output is not None:
                out = line_config.reject_output
                reject_output = PulseOutput(out.pin, self.pin_factory, active_high=out.active_high)
                self._closers.append(reject_output.close)
            line = InspectionLine(
                name=name,
                device_id=config.device.id,
                camera=self.cameras[line_config.camera],
                detector=detectors[name],
                rule=DefectRule(
                    line_config.default_threshold, dict(line_config.thresholds),
                    frozenset(line_config.reject_severities) if line_config.reject_severities is not None else None,
                ),
                cascade=cascades.get(name),
                plc=self.plc,
                publisher=self.publisher,
                reject_output=reject_output,
                reject_pulse_s=(line_config.reject_output.pulse_ms / 1000) if line_config.reject_output else 0.05,
                crops=CropSettings(**line_config.crops.model_dump()),
                queue_size=line_config.queue_size,
                model_name=f"{line_config.model}:{detectors[name].info.xml.name}",
            )
            self.lines[name] = line
            self._inputs.append((line, line_config.trigger))

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.publisher.start()
        self.plc.start()
        for line in self.lines.values():
            line.start()
            self._closers.append(line.stop)
        # Triggers last: every stage behind them is running before the first part arrives.
        for line, trigger in self._inputs:
            if trigger.type == "gpio":
                source = EdgeInput(
                    trigger.pin, self.pin_factory, line.on_trigger, edge=trigger.edge,
                    pull_up=trigger.pull_up, debounce_s=trigger.debounce_ms / 1000,
                )
            else:
                source = IntervalTrigger(trigger.period_ms / 1000, lambda t, line=line: line.on_trigger(t, "interval"), line.name)
            self._closers.append(source.close)
        log.info("edge-agent %s running: device %s, lines %s", __version__, self.config.device.id, ", ".join(self.lines))

    def stop(self) -> None:
        """Sensors off, in-flight inspections finished, then PLC and broker links closed."""
        self._close_all()
        log.info("edge-agent stopped")

    def _close_all(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:
                log.exception("error while shutting down %r", closer)

    def health(self) -> dict:
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 1) if self._started_at else 0.0,
            "lines": {name: line.health() for name, line in self.lines.items()},
            "cameras": {name: cam.stats() for name, cam in self.cameras.items()},
            "plc": self.plc.stats(),
            "mqtt": self.publisher.stats(),
        }
