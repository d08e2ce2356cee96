"""The composition root: config -> objects -> running lines, and an ordered shutdown.

Nothing else in the agent builds collaborators; everything receives them as arguments.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from . import __version__
from .act.heartbeat import Heartbeat
from .act.http import HttpAction, HttpActionError, HttpActionSettings, PublisherWithHttp
from .act.plc import ModbusPlc, PlcRegisterMap, RtuLink, TcpLink
from .act.reject_timing import RejectTimer, RejectTiming
from .catalog import Catalog
from .config import AgentConfig
from .config.schema import read_credential, walk_triggers
from .deliver.mqtt import MqttPublisher, MqttSettings
from .deliver.outbox import Outbox, OutboxSettings, OutboxStore
from .gpio import EdgeInput, LatchOutput, PulseOutput, StackLight, make_pin_factory
from .infer.cascade import Cascade
from .infer.engine import Classifier, Detector, Model, ModelLoadError
from .ingest.camera import HttpSnapshotCamera
from .ingest.composite_trigger import CompositeTrigger
from .ingest.interval_trigger import IntervalTrigger
from .ingest.motion import MotionDetector, MotionSettings, MotionTrigger
from .ingest.plc_trigger import PlcTrigger
from .ingest.scale import ScaleTrigger
from .ingest.sources import Backoff, LiveSource, file_opener, folder_opener, stream_opener, v4l2_opener
from .lines.checkout import CheckoutLine
from .lines.inspection import InspectionLine
from .lines.triggered import CropSettings
from .lines.stream import StreamLine, StreamSettings
from .postprocess.checkout import CheckoutRules, WeightCheck
from .postprocess.inspection_rule import DefectRule
from .serial_port import SerialPort

log = logging.getLogger(__name__)


class App:
    """All of one device's lines and links. Build (may raise user errors), start, stop."""

    def __init__(self, config: AgentConfig, *, pin_factory=None, config_path=None, request_restart=None):
        """config_path: the file config/set writes (None: config/set is refused).
        request_restart: called by the restart command (None: the process cannot restart itself)."""
        self.config = config
        self.control = None  # the CommandServer, when config.control.enabled
        self._config_path = config_path
        self._request_restart = request_restart
        self._started_at: float | None = None
        self._closers: list = []  # undone in reverse order on stop, also after a failed build
        try:
            self._build(config, pin_factory)
        except BaseException:
            self._close_all()
            raise

    def _build(self, config: AgentConfig, pin_factory) -> None:
        # Models first: a missing or broken model is the likeliest user error, and is found
        # before anything touches the line. They come from the active sync bundle, if any.
        self.sync = None  # the SyncJob, when config.sync is set
        self.catalog = None  # the product database in use: the active bundle's, else the factory one
        self.factory_catalog = None  # catalog.path: kept open for a rollback to the factory models
        line_models = self._load_line_models(config, self._open_bundles(config))
        slot = self.sync.store.active if self.sync is not None else None
        if config.catalog is not None:
            self.factory_catalog = Catalog(config.catalog.path)
            self._closers.append(self.factory_catalog.close)
        self.catalog = self._slot_catalog(slot)
        self._closers.append(self._close_bundle_catalog)

        # The outbox file first: it holds the session counter the link announces.
        outbox = config.outbox
        self.outbox_store = OutboxStore(OutboxSettings(
            path=outbox.path, max_bytes=outbox.max_bytes, max_age_s=outbox.max_age_h * 3600,
            drain_rate_per_s=outbox.drain_rate_per_s, inflight_window=outbox.inflight_window,
            message_expiry_s=outbox.message_expiry_s, stats_interval_s=outbox.stats_interval_s,
        ))
        self._closers.append(self.outbox_store.close)
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
            session=self.outbox_store.session,
        )
        self._closers.append(self.publisher.close)
        # The lines publish into the outbox; it feeds the link. Closed before the link.
        self.outbox = Outbox(self.outbox_store, self.publisher)
        self._closers.append(self.outbox.close)
        self.plc = None
        plc_config = config.plc
        if plc_config is not None:
            rtu = plc_config.rtu
            link = TcpLink(plc_config.host, plc_config.port) if rtu is None else \
                RtuLink(rtu.port, rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits)
            self.plc = ModbusPlc(
                link, device_id=plc_config.device_id, timeout_s=plc_config.timeout_ms / 1000,
                register_map=PlcRegisterMap(**plc_config.registers.model_dump()), verify=plc_config.verify_writes,
            )
            self._closers.append(self.plc.close)

        triggered = [line for line in config.lines.values() if line.type != "stream"]
        needs_gpio = config.gpio.stack_light is not None or any(
            getattr(line, "reject_output", None) or getattr(line, "stop_line_output", None) or
            any(trigger.type == "gpio" for _, trigger in walk_triggers(line.trigger)) for line in triggered)
        if pin_factory is None and needs_gpio:
            pin_factory = make_pin_factory(config.gpio.pin_factory)
        self.pin_factory = pin_factory
        self.stack_light = None
        if config.gpio.stack_light is not None:
            light = config.gpio.stack_light
            self.stack_light = StackLight(pin_factory, light.green, light.amber, light.red, light.buzzer, light.active_high)
            self._closers.append(self.stack_light.close)
        self.cameras = {name: _make_camera(name, cam) for name, cam in config.cameras.items()}
        self.triggers: dict[str, object] = {}
        self.reject_timers: dict[str, RejectTimer] = {}
        self.http_actions: list[HttpAction] = []
        self.lines: dict[str, InspectionLine | StreamLine | CheckoutLine] = {}
        self._inputs: list[tuple[InspectionLine | CheckoutLine, object]] = []
        for name, line_config in config.lines.items():
            if line_config.type == "stream":
                self.lines[name] = self._make_stream_line(name, line_config, line_models[name])
            elif line_config.type == "checkout":
                self.lines[name] = self._make_checkout_line(name, line_config, line_models[name])
                self._inputs.append((self.lines[name], line_config.trigger))
            else:
                self.lines[name] = self._make_inspection_line(name, line_config, line_models[name])
                self._inputs.append((self.lines[name], line_config.trigger))
        if config.control.enabled:
            self.control = self._make_control(config, self._model_info(line_models))
        self.heartbeat = None  # the PLC's: without a PLC nobody listens for it
        if self.plc is not None:
            self.heartbeat = Heartbeat(self.plc, self._pipeline_problem, plc_config.heartbeat_ms / 1000,
                                       on_state=self.stack_light.show if self.stack_light is not None else None)

    def _make_inspection_line(self, name: str, line_config, models: tuple) -> InspectionLine:
        detector, cascade, model_name = models
        config = self.config
        reject_output = None
        if line_config.reject_output is not None:
            out = line_config.reject_output
            reject_output = PulseOutput(out.pin, self.pin_factory, active_high=out.active_high)
            self._closers.append(reject_output.close)
        reject_timer = self._make_reject_timer(name, line_config, reject_output)
        return InspectionLine(
            name=name,
            device_id=config.device.id,
            camera=self.cameras[line_config.camera],
            detector=detector,
            rule=DefectRule(
                line_config.default_threshold, dict(line_config.thresholds),
                frozenset(line_config.reject_severities) if line_config.reject_severities is not None else None,
            ),
            cascade=cascade,
            plc=self.plc,
            publisher=self._line_publisher(name, line_config),
            reject_timer=reject_timer,
            stall_s=line_config.stall_s,
            reject_output=reject_output,
            reject_pulse_s=(line_config.reject_output.pulse_ms / 1000) if line_config.reject_output else 0.05,
            crops=CropSettings(**line_config.crops.model_dump()),
            queue_size=line_config.queue_size,
            model_name=model_name,
            burst_frames=line_config.burst.frames if line_config.burst else 1,
        )

    def _line_publisher(self, name: str, line_config):
        """The outbox; with webhooks, the outbox committing each event's HTTP calls with it."""
        if not line_config.webhooks:
            return self.outbox
        actions = [self._make_http_action(name, i, hook) for i, hook in enumerate(line_config.webhooks)]
        self.http_actions.extend(actions)
        return PublisherWithHttp(self.outbox, actions)

    def _make_checkout_line(self, name: str, line_config, models: tuple) -> CheckoutLine:
        detector, cascade, model_name = models
        weight = line_config.weight
        return CheckoutLine(
            name, self.config.device.id, self.cameras[line_config.camera], detector, cascade,
            DefectRule(line_config.default_threshold, dict(line_config.thresholds)),
            CheckoutRules(min_probability=line_config.min_probability, max_box_overlap=line_config.max_box_overlap,
                          unsure_from=line_config.unsure_from,
                          weight=WeightCheck(weight.tolerance_g, weight.tolerance_rel, weight.by_weight_tolerance_rel)),
            self.catalog, self._line_publisher(name, line_config),
            crops=CropSettings(**line_config.crops.model_dump()), queue_size=line_config.queue_size,
            model_name=model_name, stall_s=line_config.stall_s,
            burst_frames=line_config.burst.frames if line_config.burst else 1)

    def _slot_catalog(self, slot):
        """The product database for slot: its own if it carries one, else the factory one."""
        if slot is not None and slot.catalog_path is not None:
            return Catalog(slot.catalog_path)
        return self.factory_catalog

    def _close_bundle_catalog(self) -> None:
        if self.catalog is not None and self.catalog is not self.factory_catalog:
            self.catalog.close()

    def _make_stream_line(self, name: str, line_config, models: tuple) -> StreamLine:
        detector, cascade, model_name = models
        motion = line_config.motion
        settings = StreamSettings(
            max_fps=line_config.max_fps,
            motion=None if motion is None else MotionSettings(
                scale_height=motion.scale_height, threshold=motion.threshold, min_area=motion.min_area,
                lighting_limit=motion.lighting_limit, background_alpha=motion.background_alpha),
            still_interval_s=motion.still_interval_s if motion is not None else None,
            event_interval_s=line_config.event_interval_s, max_batch=line_config.max_batch,
            queue_size=line_config.queue_size, stall_s=line_config.stall_s)
        analytics = line_config.analytics.build(line_config.cameras) if line_config.analytics is not None else None
        return StreamLine(
            name, self.config.device.id, {cam: self.cameras[cam] for cam in line_config.cameras}, detector,
            DefectRule(line_config.default_threshold, dict(line_config.thresholds)), self.outbox, settings,
            cascade=cascade, crops=CropSettings(**line_config.crops.model_dump()), model_name=model_name,
            analytics=analytics,
            classify_labels=frozenset(line_config.classify_labels) if line_config.classify_labels is not None else None)

    def _make_control(self, config: AgentConfig, model_info: dict):
        """Commands over MQTT: keys, replay store and audit log first (user errors name the file)."""
        from .control.auth import AuditLog, Authoriser, ReplayStore, load_public_key
        from .control.commands import CommandServer
        from .control.live_config import ConfigFile

        control = config.control
        keys = [load_public_key(path) for path in control.public_keys]
        state_dir = config.outbox.path.parent  # a config not from load_config has no paths filled in
        replay = ReplayStore(control.replay_db or state_dir / "commands.db")
        self._closers.append(replay.close)
        audit = AuditLog(control.audit_log or state_dir / "audit.log", control.audit_max_bytes)
        self._closers.append(audit.close)
        authoriser = Authoriser(config.device.id, keys, replay, require_signature=control.require_signature,
                                max_validity_s=control.max_validity_s, clock_skew_s=control.clock_skew_s)
        server = CommandServer(self, self.publisher, authoriser, audit, config,
                               config_file=ConfigFile(self._config_path) if self._config_path else None,
                               request_restart=self._request_restart, model_info=model_info)
        server.listen()  # subscribed from the first connection; handled once start() has run the lines
        return server

    def _make_http_action(self, line: str, index: int, hook) -> HttpAction:
        """A webhook of `line`; its calls wait in the outbox file under LINE/NAME."""
        try:
            headers = tuple((name, read_credential(value)) for name, value in hook.headers.items())
        except ValueError as exc:
            raise HttpActionError(f"lines.{line}.webhooks[{index}].headers: {exc}") from None
        settings = HttpActionSettings(
            hook.url, frozenset(hook.on), timeout_s=hook.timeout_ms / 1000, backoff_s=hook.backoff_ms / 1000,
            backoff_max_s=hook.backoff_max_ms / 1000, max_age_s=hook.max_age_h * 3600,
            max_pending=hook.max_pending, max_bytes=hook.max_bytes,
            headers=headers)
        return HttpAction(f"{line}/{hook.name_at(index)}", settings, self.outbox_store.http)

    def _make_reject_timer(self, name: str, line_config, reject_output) -> RejectTimer | None:
        timing = line_config.reject_timing
        if timing is None:
            return None
        stop_output = None
        if line_config.stop_line_output is not None:
            stop_output = LatchOutput(line_config.stop_line_output.pin, self.pin_factory,
                                      line_config.stop_line_output.active_high)
            self._closers.append(stop_output.close)
        travel_s = timing.distance_m / timing.belt_speed_mps if timing.mode == "delay" else 0.0
        timer = RejectTimer(
            RejectTiming(mode=timing.mode, travel_s=travel_s or 1.0, encoder_counts=timing.encoder_counts or 1,
                         decision_margin_s=timing.decision_margin_ms / 1000,
                         actuator_lead_s=timing.actuator_lead_ms / 1000,
                         pulse_s=line_config.reject_output.pulse_ms / 1000 if line_config.reject_output else 0.05,
                         fail_action=timing.fail_action),
            reject_output, stop_output, encoder=self.plc.read_encoder if timing.mode == "encoder" else None, name=name)
        self.reject_timers[name] = timer
        return timer

    def _pipeline_problem(self) -> str | None:
        for name, line in self.lines.items():
            problem = line.pipeline_problem()
            if problem is not None:
                return f"line {name}: {problem}"
        return None

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.publisher.start()
        self.outbox.start()
        if self.plc is not None:
            self.plc.start()
        for action in self.http_actions:
            action.start()
            self._closers.append(action.close)
        unknown = {t: c["pending"] for t, c in self.outbox_store.http.counters().items()
                   if c["pending"] and t not in {a.target for a in self.http_actions}}
        for target, pending in unknown.items():
            log.warning("outbox: %d HTTP calls wait for %s, which is no longer configured; they stay in %s "
                        "until a webhook of that name is configured again", pending, target, self.outbox_store.path)
        for camera in self.cameras.values():
            camera.start()
            self._closers.append(camera.close)
        for name, line in self.lines.items():
            timer = self.reject_timers.get(name)
            if timer is not None:  # closed after its line: the parts in transit still reach the station
                timer.start()
                self._closers.append(timer.close)
            line.start()
            self._closers.append(line.stop)
        if self.heartbeat is not None:
            self.heartbeat.start()
            self._closers.append(self.heartbeat.close)
        # Triggers last: every stage behind them is running before the first part arrives.
        for line, trigger in self._inputs:
            source = self._make_trigger(line, trigger)
            self.triggers[line.name] = source
            self._closers.append(source.close)
        if self.control is not None:  # last: commands reach lines that are running
            self.control.start()
            self._closers.append(self.control.close)
        if self.sync is not None:  # stopped first: no swap while the lines stop
            self.sync.start()
            self._closers.append(self.sync.close)
        log.info("edge-agent %s running: device %s, lines %s", __version__, self.config.device.id, ", ".join(self.lines))

    def _make_trigger(self, line: InspectionLine | CheckoutLine, trigger):
        line_config = self.config.lines[line.name]
        camera = self.cameras[line_config.camera]
        frames = line_config.burst.frames if line_config.burst else 1
        source_name = _trigger_source(trigger)

        def on_fire(t_mono: float, weight_g: float | None = None, plc_trigger_id: int | None = None,
                    weight_change_g: float | None = None):
            camera.expect(t_mono, frames)  # keep the frame(s) that belong to this trigger for the line
            line.on_trigger(t_mono, source_name, weight_g, plc_trigger_id, weight_change_g)

        return self._build_trigger(line.name, camera, trigger, on_fire)

    def _build_trigger(self, line_name: str, camera, trigger, on_fire):
        """One trigger from its config; a combination builds its members, each feeding it."""
        if trigger.type in ("all_of", "any_of"):
            combination = CompositeTrigger(
                trigger.type, len(trigger.members), on_fire, window_s=getattr(trigger, "window_ms", 0) / 1000,
                cooldown_s=trigger.cooldown_ms / 1000, name=line_name)
            members = []
            try:
                for i, member in enumerate(trigger.members):
                    members.append(self._build_trigger(line_name, camera, member, combination.member_input(i)))
            except BaseException:
                combination.attach(members)
                combination.close()  # the members already running stop with it
                raise
            combination.attach(members)
            return combination
        if trigger.type == "plc":
            return PlcTrigger(self.plc, on_fire, poll_s=trigger.poll_ms / 1000, fire_on=trigger.fire_on,
                              present_from_coil=trigger.part_present == "coil",
                              stale_after_s=trigger.stale_after_ms / 1000, name=line_name)
        if trigger.type == "gpio":
            return EdgeInput(trigger.pin, self.pin_factory, on_fire, edge=trigger.edge,
                             pull_up=trigger.pull_up, debounce_s=trigger.debounce_ms / 1000)
        if trigger.type == "motion":
            settings = MotionSettings(
                scale_height=trigger.scale_height, threshold=trigger.threshold, min_area=trigger.min_area,
                lighting_limit=trigger.lighting_limit, background_alpha=trigger.background_alpha,
                mask=tuple(tuple(polygon) for polygon in trigger.mask),
            )
            watched = self.cameras[trigger.camera] if trigger.camera else camera
            return MotionTrigger(watched, MotionDetector(settings), on_fire, cooldown_s=trigger.cooldown_ms / 1000,
                                 max_fps=trigger.max_fps, quiet_frames=trigger.quiet_frames, name=line_name,
                                 repeat_s=trigger.repeat_ms / 1000 if trigger.repeat_ms else None)
        if trigger.type == "scale":
            port = SerialPort(trigger.port, trigger.baudrate, trigger.bytesize, trigger.parity, trigger.stopbits)
            return ScaleTrigger(
                port, trigger.protocol, on_fire, threshold_g=trigger.threshold_g, direction=trigger.direction,
                confirm=trigger.confirm_readings, poll_interval_s=trigger.poll_interval_ms / 1000,
                reply_timeout_s=trigger.reply_timeout_ms / 1000, unstable_after_s=trigger.unstable_after_s,
                toledo_checksum=trigger.checksum, name=line_name,
            )
        return IntervalTrigger(trigger.period_ms / 1000, on_fire, line_name)

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
            "triggers": {name: trigger.stats() for name, trigger in self.triggers.items() if hasattr(trigger, "stats")},
            **({"plc": {**self.plc.stats(), "heartbeat": self.heartbeat.stats()}} if self.plc is not None else {}),
            **({"http_actions": {a.target: a.stats() for a in self.http_actions}} if self.http_actions else {}),
            "mqtt": self.publisher.stats(),
            "outbox": self.outbox.stats(),
            **({"commands": self.control.stats()} if self.control is not None else {}),
            **({"sync": self.sync.status()} if self.sync is not None else {}),
            **({"catalog": {"version": self.catalog.info.version, "products": self.catalog.info.products,
                            "factory": self.catalog is self.factory_catalog}}
               if self.catalog is not None else {}),
        }

    # -- models and sync bundles (issue 8) --------------------------------------------------
    def _open_bundles(self, config: AgentConfig):
        """The bundle store, recovered, and the sync job; the active slot (None: factory models)."""
        if config.sync is None:
            return None
        from .control.auth import ControlSetupError, load_public_key
        from .sync.store import BundleStore, StoreError

        settings = config.sync
        try:
            keys = [load_public_key(path) for path in settings.public_keys]
        except ControlSetupError as exc:
            raise StoreError(str(exc).replace("control.public_keys", "sync.public_keys")) from None
        if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
            raise StoreError(f"sync.ca_bundle {settings.ca_bundle}: no such file")
        store = BundleStore(settings.state_dir, keys)
        store.recover()
        self.sync = _make_sync_job(settings, store, keys, self)
        self.sync.note_start()  # boot counting: may revert a version on trial
        return store.active

    def _load_line_models(self, config: AgentConfig, slot) -> dict[str, tuple]:
        """Per line: (detector, cascade or None, model name for events). A bundle whose models do
        not load is reverted here, down to the factory models; those failing is a user error."""
        while True:
            try:
                return self._line_models(config, slot)
            except ModelLoadError as exc:
                if slot is None:
                    raise
                log.error("version %d: its models do not load (%s): reverting", slot.version, exc)
                self.sync.store.revert(f"its models do not load: {exc}")
                slot = self.sync.store.active

    def _line_models(self, config: AgentConfig, slot) -> dict[str, tuple]:
        def load(name: str, hint: str) -> tuple[Model, str]:
            folder = slot.model_dir(name) if slot is not None else None
            model = self._load_model(config, name, folder or config.models[name].path, hint)
            return model, f"@{slot.version}" if folder else ""

        models = {}
        for line_name, line_config in config.lines.items():
            detector_name, classifier_name = _line_model_names(line_config)
            hint = _HINTS[line_config.type]
            model, tag = load(detector_name, hint)
            detector = Detector(model)
            cascade = Cascade(Classifier(load(classifier_name, hint)[0])) if classifier_name else None
            models[line_name] = (detector, cascade, f"{detector_name}:{detector.info.path.name}{tag}")
        return models

    @staticmethod
    def _load_model(config: AgentConfig, name: str, path, hint: str = "LATENCY") -> Model:
        """The line's hint (LATENCY for triggered lines, THROUGHPUT for streams); the config names
        the device and the resize."""
        model = config.models[name]
        return Model(path, device=model.device, performance_hint=hint, cache_dir=config.model_cache_dir,
                     resize=model.resize, precision=model.precision)

    def _model_info(self, line_models: dict[str, tuple]) -> dict:
        info = {}
        for name, (detector, cascade, _) in line_models.items():
            detector_name, classifier_name = _line_model_names(self.config.lines[name])
            info[detector_name] = detector.info
            if cascade is not None:
                info[classifier_name] = cascade.classifier.info
        return info

    # The sync job's host (agent.sync.job.Host): golden runs, swaps, health, reports.
    def load_runner(self, model_name: str, folder):
        if model_name not in self.config.models:
            return None  # the bundle carries a model this device has no use for
        model = self._load_model(self.config, model_name, folder)
        return Classifier(model) if model.info.adapter == "classifier" else Detector(model)

    def prepare(self, slot) -> _PreparedSwap:
        """The lines' models and product database from slot (None: factory), compiled and warmed for
        each camera's frames."""
        line_models = self._line_models(self.config, slot)
        for name, (detector, cascade, _) in line_models.items():
            for size in self.lines[name].frame_sizes:
                detector.detect(np.zeros((*size, 3), np.uint8), 0.5)
            if cascade is not None:
                cascade.classifier.classify([np.zeros((64, 64, 3), np.uint8)])
        return _PreparedSwap(self, line_models, self._slot_catalog(slot))

    def line_load(self) -> dict[str, dict]:
        return {name: line.load_figures() for name, line in self.lines.items()}

    def report(self, outcome) -> None:
        """A sync outcome: an event on {p}/{d}/sync/events, the retained {p}/{d}/sync, the state."""
        # Through the outbox: an outcome decided at start (a revert) or while offline still arrives.
        event = json.loads(json.dumps({**outcome.payload(), "device_id": self.config.device.id}, default=str))
        self.outbox.publish_message(SYNC_STREAM, "sync/events", event)
        self.publish_sync_status()
        if self.control is not None:
            self.control.publish_state()

    def publish_sync_status(self) -> None:
        if self.sync is not None:
            self.publisher.publish_retained("sync", json.loads(json.dumps(
                {"schema": 1, "device_id": self.config.device.id, "ts": round(time.time(), 3), **self.sync.status()},
                default=str)))


class _PreparedSwap:
    """New models for every line and the product database, swapped in by apply()."""

    def __init__(self, app: App, line_models: dict[str, tuple], catalog):
        self._app, self._line_models, self._catalog = app, line_models, catalog

    def apply(self) -> None:
        app = self._app
        applied = True
        for name, (detector, cascade, model_name) in self._line_models.items():
            line = app.lines[name]
            # A checkout line takes the product database with its models, between the same two baskets.
            extra = {"catalog": self._catalog} if isinstance(line, CheckoutLine) else {}
            if not line.swap_models(detector, cascade, model_name, **extra):
                applied = False
                log.warning("line %s: the model swap is still waiting for the inspect thread", name)
        old, app.catalog = app.catalog, self._catalog
        if old is not None and old is not self._catalog and old is not app.factory_catalog:
            if applied:
                old.close()
            else:  # a line may still read it until it applies the swap: left to the garbage collector
                log.warning("the previous product database stays open: a line has not applied the swap yet")
        if app.control is not None:
            app.control.model_info = app._model_info(self._line_models)


def _make_sync_job(settings, store, keys, host):
    from .sync.download import FetchSettings
    from .sync.golden import GoldenSettings
    from .sync.job import SyncJob, SyncSettings, TrialSettings
    from .sync.schedule import parse_window

    return SyncJob(SyncSettings(
        manifest_url=settings.manifest_url, window=parse_window(settings.window) if settings.window else None,
        retry_s=settings.retry_s, timeout_s=settings.timeout_s, max_artefact_bytes=settings.max_artefact_bytes,
        max_bundle_bytes=settings.max_bundle_bytes,
        fetch=FetchSettings(ca_bundle=settings.ca_bundle, connect_timeout_s=settings.connect_timeout_s,
                            read_timeout_s=settings.read_timeout_s, retries=settings.retries,
                            max_manifest_bytes=settings.max_manifest_bytes),
        golden=GoldenSettings(**settings.golden.model_dump()),
        trial=TrialSettings(**settings.trial.model_dump()),
    ), store, keys, host)


_HINTS = {"inspection": "LATENCY", "stream": "THROUGHPUT", "checkout": "LATENCY"}
SYNC_STREAM = "@sync"  # the outbox's name for the sync events' sequence (no line can be called that)


def _line_model_names(line_config) -> tuple[str, str | None]:
    """The config names of a line's detector and of its second-stage classifier (or None)."""
    if line_config.type in ("stream", "checkout"):
        return line_config.model, line_config.classifier
    return line_config.model, line_config.severity_model


def _trigger_source(trigger) -> str:
    """The event's trigger.source: the type, or e.g. all_of(motion,scale) for a combination."""
    if trigger.type in ("all_of", "any_of"):
        return f"{trigger.type}({','.join(_trigger_source(member) for member in trigger.members)})"
    return trigger.type


def _make_camera(name: str, cam):
    """A camera source for one `cameras.NAME` entry."""
    if cam.type == "http_snapshot":
        return HttpSnapshotCamera(name, cam.url, timeout_s=cam.timeout_ms / 1000)
    if cam.type == "v4l2":
        opener, describe = v4l2_opener(cam.device, cam.width, cam.height, cam.fps, cam.fourcc), f"V4L2 {cam.device}"
    elif cam.type == "stream":
        opener = stream_opener(cam.url, cam.rtsp_transport, cam.open_timeout_ms, cam.read_timeout_ms)
        describe = cam.url.split("@")[-1]  # never log a password in the URL
    elif cam.type == "file":
        opener, describe = file_opener(cam.path, cam.fps, cam.loop), str(cam.path)
    else:
        opener, describe = folder_opener(cam.path, cam.fps, cam.loop), str(cam.path)
    return LiveSource(name, opener, cam.type, grab_timeout_s=cam.timeout_ms / 1000, stall_timeout_s=cam.stall_timeout_s,
                      backoff=Backoff(max_s=cam.reconnect_max_s), describe=describe)
