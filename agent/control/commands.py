"""Commands over MQTT: request in on `{prefix}/{device}/cmd/{name}`, one reply out.

    network thread  -> _on_message: size and retain checks, then a bounded queue (full: "busy")
    command thread  -> parse, validate, authorise, run the handler, reply, audit

Every reply is JSON with `ok`, `code`, `message` and `data` (schemas/reply.json). It goes to
the request's MQTT 5 Response Topic with its Correlation Data; else to the payload's
`reply_to` (echoing `request_id`); else to `{prefix}/{device}/replies`, so even a request
too broken to name its reply address gets an answer somewhere.

A refused command actuates nothing: authorisation runs before any handler, and handlers
validate all their arguments before they change anything.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.schema import CREDENTIAL_PREFIX, AgentConfig
from ..deliver.mqtt import IncomingMessage
from .auth import AuditLog, Authoriser
from .live_config import ConfigFile, ConfigFileError, live_safe, changed_paths

log = logging.getLogger(__name__)

REPLY_SCHEMA = 1
CMD_PREFIX = "cmd/"
REPLIES = "replies"
STATE = "state"

# Reply codes (README "Commands"). ok=True only for the first two.
CODES = {
    "ok": "done",
    "restart_scheduled": "done, and the agent restarts to apply it",
    "bad_json": "the payload is not a JSON object",
    "bad_request": "the payload or its arguments do not match the schema",
    "too_large": "the payload is larger than control.max_payload_bytes",
    "unknown_command": "no such command",
    "unsigned": "this device requires signed commands",
    "bad_signature": "the signature does not verify",
    "expired": "expires_at has passed",
    "not_yet_valid": "issued_at is in the future",
    "replayed": "this cmd_id was already received",
    "busy": "too many commands waiting; retry later",
    "unknown_line": "no such line",
    "not_available": "the capability is not built on this device",
    "invalid_config": "the new config does not validate",
    "failed": "the command was valid but could not be carried out",
    "internal_error": "a bug in the agent; see its log",
}
OK_CODES = ("ok", "restart_scheduled")


class CommandFailed(Exception):
    def __init__(self, code: str, message: str, data: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data or {}


# -- payload schemas (mirrored in agent/deliver/schemas/command.json) ---------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Envelope(_Strict):
    args: dict[str, Any] = {}
    cmd_id: str | None = Field(None, min_length=1, max_length=128)
    issued_at: float | None = None
    expires_at: float | None = None
    request_id: str | int | None = None
    reply_to: str | None = Field(None, min_length=1, max_length=1024)
    sig: str | None = Field(None, max_length=256)


class NoArgs(_Strict):
    pass


class LineArgs(_Strict):
    line: str | None = None  # None: every line (pause/resume), or the only line


class SnapshotArgs(LineArgs):
    camera: str | None = None  # a stream line's camera (default: its first)


class ThresholdArgs(_Strict):
    line: str | None = None
    default: float | None = Field(None, gt=0, lt=1)
    thresholds: dict[str, float | None] = {}  # label -> threshold; null removes the label's own threshold
    persist: bool = True  # also write it to the config file (when the agent has one)


class ConfigSetArgs(_Strict):
    patch: dict[str, Any] | None = None  # JSON merge patch (RFC 7386) onto the config file
    config: dict[str, Any] | None = None  # or the whole config
    restart: bool = True  # when a change cannot be applied live, restart the agent to apply it


class LogLevelArgs(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    logger: str | None = Field(None, min_length=1, max_length=200)


class SyncNowArgs(_Strict):
    wait_s: float = Field(0.0, ge=0, le=30)  # wait this long for the outcome (the command thread waits too)
    force: bool = False  # fetch the manifest even if it has not changed (no If-None-Match)


class RollbackArgs(_Strict):
    reason: str | None = Field(None, max_length=200)


class RestartArgs(_Strict):
    reason: str | None = Field(None, max_length=200)


@dataclass(frozen=True)
class _Command:
    args: type[BaseModel]
    handler: Callable[[CommandServer, Any], tuple[str, str, dict]]
    sets_state: bool = False


def _jsonable(value: Any) -> Any:
    """Health data made JSON-safe: NaN/inf -> null, paths and others -> str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class CommandServer:
    """The device's command handler. start() subscribes; close() stops the command thread.

    app: the App (lines, cameras, health, publisher). config_file: where config/set writes, or
    None. request_restart: called after a restart reply is sent, or None when this process
    cannot restart itself (then restart and restart-needing config/set say so).
    """

    def __init__(self, app, publisher, authoriser: Authoriser, audit: AuditLog, config: AgentConfig, *,
                 config_file: ConfigFile | None = None, request_restart: Callable[[], None] | None = None,
                 model_info: dict | None = None):
        self.app = app
        self.publisher = publisher
        self._auth = authoriser
        self._audit = audit
        self.config = config
        self.config_file = config_file
        self.request_restart = request_restart
        self.model_info = model_info or {}
        self._max_bytes = config.control.max_payload_bytes
        self._device_id = config.device.id
        self._queue: queue.Queue = queue.Queue(config.control.queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._config_lock = threading.Lock()
        self.counters = dict.fromkeys(("received", "accepted", "refused", "busy", "errors"), 0)
        self.last_refusal: str | None = None

    # -- lifetime ---------------------------------------------------------------------
    def listen(self) -> None:
        """Subscribe; call before the link connects. Commands queue up until start()."""
        self.publisher.subscribe(f"{CMD_PREFIX}#", self._on_message)

    def start(self) -> None:
        """Handle commands (those queued since listen() first) and publish the state."""
        self._thread = threading.Thread(target=self._loop, name="commands", daemon=True)
        self._thread.start()
        self.publish_state()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def stats(self) -> dict:
        return {**self.counters, "queued": self._queue.qsize(), "last_refusal": self.last_refusal}

    # -- network thread -----------------------------------------------------------------
    def _on_message(self, message: IncomingMessage) -> None:
        self.counters["received"] += 1
        if len(message.payload) > self._max_bytes:
            self._finish(message, None, None, "too_large",
                         f"{len(message.payload)} bytes; this device takes at most {self._max_bytes}")
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.counters["busy"] += 1
            self._finish(message, None, None, "busy", f"{self._queue.maxsize} commands are waiting; retry later")

    # -- command thread -----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(message)
            except Exception:
                log.exception("command on %s failed", message.topic)

    def handle(self, message: IncomingMessage) -> None:
        base = f"{self.publisher.base_topic}/{CMD_PREFIX}"
        if not message.topic.startswith(base):
            # A subscription left in the persistent session from another device id: not ours.
            self._audit.write({"topic": message.topic, "code": "wrong_topic", "ok": False})
            return
        name = message.topic[len(base):]
        if message.retain:
            self._finish(message, name, None, "bad_request", "retained commands are refused: publish with retain=false")
            return
        try:
            body = json.loads(message.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self._finish(message, name, None, "bad_json", f"not JSON: {exc}")
            return
        if not isinstance(body, dict):
            self._finish(message, name, None, "bad_json", f"expected a JSON object, got {type(body).__name__}")
            return
        try:
            envelope = Envelope.model_validate(body)
        except ValidationError as exc:
            self._finish(message, name, _partial(body), "bad_request", _validation_message(exc))
            return
        command = COMMANDS.get(name)
        if command is None:
            self._finish(message, name, envelope, "unknown_command",
                         f"no command {name!r}; commands: {', '.join(sorted(COMMANDS))}")
            return
        decision = self._auth.check(name, body)
        if not decision.ok:
            self._finish(message, name, envelope, decision.code, decision.message, key=decision.key_id)
            return
        try:
            args = command.args.model_validate(envelope.args)
        except ValidationError as exc:
            self._finish(message, name, envelope, "bad_request", f"args: {_validation_message(exc)}", key=decision.key_id)
            return
        after = None
        try:
            code, text, data = command.handler(self, args)
            if isinstance(data, dict) and callable(data.get("_after")):
                after = data.pop("_after")
        except CommandFailed as exc:
            code, text, data = exc.code, exc.message, exc.data
        except Exception:
            log.exception("command %s failed", name)
            code, text, data = "internal_error", "the agent failed to carry out the command; see its log", {}
        self._finish(message, name, envelope, code, text, data, key=decision.key_id, args=envelope.args)
        if command.sets_state and code in OK_CODES:
            self.publish_state()
        if after is not None:
            after()

    # -- replies ------------------------------------------------------------------------
    def _finish(self, message: IncomingMessage, name: str | None, envelope, code: str, text: str,
                data: dict | None = None, *, key: str | None = None, args: dict | None = None) -> None:
        ok = code in OK_CODES
        if ok:
            self.counters["accepted"] += 1
        else:
            self.counters["refused" if code != "internal_error" else "errors"] += 1
            self.last_refusal = f"{name}: {code}"
        request_id = getattr(envelope, "request_id", None)
        cmd_id = getattr(envelope, "cmd_id", None)
        reply = {"schema": REPLY_SCHEMA, "ok": ok, "code": code, "message": text or CODES.get(code, ""),
                 "data": _jsonable(data or {}), "command": name, "device_id": self._device_id,
                 "request_id": request_id, "cmd_id": cmd_id, "ts": round(time.time(), 3)}
        topic, why_not = self._reply_topic(message, getattr(envelope, "reply_to", None))
        if why_not:
            reply["message"] += f" (reply_to refused: {why_not})"
        try:
            payload = _json_bytes(reply)
        except ValueError:  # request_id with characters JSON cannot carry: drop it, answer anyway
            reply["request_id"] = None
            payload = _json_bytes(reply)
        # Audited before the reply goes out: whoever sees the reply can find the command in the log.
        self._audit.write({"command": name, "topic": message.topic, "code": code, "ok": ok, "cmd_id": cmd_id,
                           "request_id": request_id, "key": key, "bytes": len(message.payload),
                           "args": _summary(args) if args else None})
        self.publisher.publish_to(topic, payload, correlation_data=message.correlation_data)
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "command %s: %s %s", name, code, text)

    def _reply_topic(self, message: IncomingMessage, reply_to: str | None) -> tuple[str, str | None]:
        default = f"{self.publisher.base_topic}/{REPLIES}"
        wanted = message.response_topic or reply_to
        if not wanted:
            return default, None
        why = _reply_topic_problem(wanted, self.publisher.base_topic)
        return (default, why) if why else (wanted, None)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        lines = {}
        for name, line in self.app.lines.items():
            rule = line.rule
            lines[name] = {"paused": line.paused, "default_threshold": rule.default_threshold,
                           "thresholds": dict(rule.thresholds)}
        state = {"schema": REPLY_SCHEMA, "device_id": self._device_id, "ts": round(time.time(), 3),
                 "log_level": logging.getLevelName(logging.getLogger().level), "lines": lines}
        sync = getattr(self.app, "sync", None)
        if sync is not None:  # issue 8: what runs, and whether it is on trial
            active, trial = sync.store.active, sync.store.trial
            state["bundle"] = {"version": active.version if active else None,
                               "label": active.manifest.label if active else "factory",
                               "previous": sync.store.previous.version if sync.store.previous else None,
                               "trial": {k: trial.get(k) for k in ("version", "until", "crashes")} if trial else None}
        return state

    def publish_state(self) -> None:
        self.publisher.publish_retained(STATE, _jsonable(self.state()))

    # -- helpers for handlers ----------------------------------------------------------------
    def lines_for(self, name: str | None, *, one: bool = False) -> list:
        lines = self.app.lines
        if name is None:
            if one and len(lines) != 1:
                raise CommandFailed("bad_request", f"args.line is needed: lines are {', '.join(lines)}")
            return list(lines.values())
        if name not in lines:
            raise CommandFailed("unknown_line", f"no line {name!r}; lines: {', '.join(lines)}")
        return [lines[name]]

    def apply_config(self, raw: dict, restart: bool) -> tuple[str, str, dict]:
        """Validate raw, write it, apply what is safe live; the rest needs a restart."""
        if self.config_file is None:
            raise CommandFailed("not_available", "this agent was started without a config file to write to")
        with self._config_lock:
            try:
                new = self.config_file.write(raw)
            except ConfigFileError as exc:
                raise CommandFailed(exc.code, str(exc), {"issues": exc.issues}) from None
            changed = changed_paths(self.config, new)
            pending = [p for p in changed if not live_safe(p)]
            self._apply_live(new)
            self.config = new
        data = {"changed": changed, "applied_live": [p for p in changed if live_safe(p)], "restart_needed": pending,
                "path": str(self.config_file.path), "previous": str(self.config_file.previous_path)}
        if not pending:
            return "ok", f"{len(changed)} setting(s) changed, all applied live" if changed else "no change", data
        if restart and self.request_restart is not None:
            data["_after"] = self.request_restart
            return "restart_scheduled", f"written; {len(pending)} setting(s) need a restart, restarting now", data
        why = "restart: false" if not restart else "this process cannot restart itself"
        return "ok", f"written; {len(pending)} setting(s) apply at the next restart ({why})", data

    def _apply_live(self, new: AgentConfig) -> None:
        for name, line in self.app.lines.items():
            conf = new.lines.get(name)
            if conf is not None:
                line.rule = replace(line.rule, default_threshold=conf.default_threshold, thresholds=dict(conf.thresholds))
        if new.log_level != self.config.log_level:
            logging.getLogger().setLevel(new.log_level)


def _partial(body: dict) -> SimpleNamespace:
    """request_id / cmd_id / reply_to from a body that failed validation, where they are usable."""
    def pick(key, kinds, limit):
        value = body.get(key)
        return value if isinstance(value, kinds) and not isinstance(value, bool) and len(str(value)) <= limit else None

    return SimpleNamespace(request_id=pick("request_id", (str, int), 128), cmd_id=pick("cmd_id", str, 128),
                           reply_to=pick("reply_to", str, 1024))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _reply_topic_problem(topic: str, base: str) -> str | None:
    if any(ch in topic for ch in "+#\x00") or len(topic) > 1024:
        return "wildcards, NUL or over 1024 characters"
    if topic == base or (topic.startswith(base + "/") and not topic.startswith(f"{base}/{REPLIES}")):
        return f"only {base}/{REPLIES}... may be used under this device's topics"
    if "/cmd/" in f"/{topic}/" or topic.endswith("/cmd"):
        return "a command topic cannot take replies"
    return None


def _summary(args: dict) -> dict:
    text = json.dumps(args, default=str)
    return args if len(text) <= 2000 else {"_truncated": text[:2000]}


# -- handlers --------------------------------------------------------------------------------------

def _ping(server: CommandServer, args) -> tuple[str, str, dict]:
    return "ok", "pong", {"ts": round(time.time(), 3)}


def _status(server: CommandServer, args) -> tuple[str, str, dict]:
    health = server.app.health()
    models = {}
    for name, model in server.config.models.items():
        info = server.model_info.get(name)
        meta = getattr(info, "metadata", None) or {}
        path = info.path.parent if info is not None else model.path  # a sync bundle's slot, or the config's
        models[name] = {"path": str(path), "version": meta.get("version") or meta.get("date"),
                        "adapter": getattr(info, "adapter", None)}
    lines = health.get("lines", {})
    last_errors = {f"camera {n}": s.get("last_error") for n, s in health.get("cameras", {}).items() if s.get("last_error")}
    for key in ("mqtt", "plc", "outbox"):
        error = (health.get(key) or {}).get("last_error")
        if error:
            last_errors[key] = error
    if server.last_refusal:
        last_errors["commands"] = server.last_refusal
    return "ok", "", {
        "version": health.get("version"), "uptime_s": health.get("uptime_s"), "lines": lines, "models": models,
        "sources": health.get("cameras", {}), "triggers": health.get("triggers", {}),
        "queues": {name: line.get("queues") for name, line in lines.items()},
        "outbox": health.get("outbox"), "mqtt": health.get("mqtt"), "plc": health.get("plc"),
        "commands": server.stats(), "last_errors": last_errors,
        **{key: health[key] for key in ("sync", "catalog") if key in health},
    }


_SECRET_KEYS = ("password",)


def _redact(value):
    """The config without its secrets: passwords, and the webhooks' header values that are
    written in the config (a `credential:NAME` reference is shown as it is)."""
    if isinstance(value, dict):
        return {k: ("***" if k in _SECRET_KEYS and v is not None
                    else _redact_headers(v) if k == "headers" and isinstance(v, dict)
                    else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _redact_headers(headers: dict) -> dict:
    return {name: text if str(text).startswith(CREDENTIAL_PREFIX) else "***" for name, text in headers.items()}


def _config_get(server: CommandServer, args) -> tuple[str, str, dict]:
    path = server.config_file.path if server.config_file else None
    return "ok", "the running config", {"config": _redact(server.config.model_dump(mode="json")),
                                        "path": str(path) if path else None}


def _config_set(server: CommandServer, args: ConfigSetArgs) -> tuple[str, str, dict]:
    if (args.patch is None) == (args.config is None):
        raise CommandFailed("bad_request", "give exactly one of args.patch (a merge patch) or args.config (the whole file)")
    if server.config_file is None:
        raise CommandFailed("not_available", "this agent was started without a config file to write to")
    raw = args.config if args.config is not None else merge_patch(server.config_file.read(), args.patch)
    return server.apply_config(raw, args.restart)


def merge_patch(target, patch):
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pause(server: CommandServer, args: LineArgs) -> tuple[str, str, dict]:
    lines = server.lines_for(args.line)
    for line in lines:
        line.paused = True
    return "ok", f"paused {', '.join(l.name for l in lines)}: triggers are ignored until line/resume", \
        {"lines": {l.name: {"paused": True} for l in lines}}


def _resume(server: CommandServer, args: LineArgs) -> tuple[str, str, dict]:
    lines = server.lines_for(args.line)
    for line in lines:
        line.paused = False
    return "ok", f"resumed {', '.join(l.name for l in lines)}", {"lines": {l.name: {"paused": False} for l in lines}}


def _trigger(server: CommandServer, args: LineArgs) -> tuple[str, str, dict]:
    (line,) = server.lines_for(args.line, one=True)
    line_config = server.config.lines[line.name]
    if line_config.type == "stream":
        raise CommandFailed("not_available", f"line {line.name} is a stream line: it detects continuously, "
                                             "there is nothing to trigger (use snapshot for a picture)")
    if line.paused:
        raise CommandFailed("failed", f"line {line.name} is paused: line/resume it first")
    camera = server.app.cameras[line_config.camera]
    t_mono = time.monotonic()
    camera.expect(t_mono)
    trigger = line.on_trigger(t_mono, "command")
    if trigger is None:
        raise CommandFailed("failed", f"line {line.name} is not taking triggers (stopping)")
    return "ok", f"inspection {trigger.seq} started", {"line": line.name, "inspection_id": trigger.seq}


def _snapshot(server: CommandServer, args: SnapshotArgs) -> tuple[str, str, dict]:
    (line,) = server.lines_for(args.line, one=True)
    line_config = server.config.lines[line.name]
    cameras = line_config.cameras if line_config.type == "stream" else [line_config.camera]
    if args.camera is not None and args.camera not in cameras:
        raise CommandFailed("bad_request", f"line {line.name} has no camera {args.camera!r} (it reads {', '.join(cameras)})")
    camera_name = args.camera or cameras[0]
    frame = server.app.cameras[camera_name].grab()
    if frame is None:
        error = getattr(server.app.cameras[camera_name], "last_error", None)
        raise CommandFailed("failed", f"camera {camera_name} gave no frame ({error or 'timed out'})")
    ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise CommandFailed("failed", "JPEG encoding failed")
    snapshot_id = f"snapshot-{uuid.uuid4().hex[:12]}"
    height, width = frame.image.shape[:2]
    server.publisher.publish_crop(line.name, snapshot_id, 0, jpeg.tobytes(),
                                   {"schema": 1, "event_id": snapshot_id, "camera": camera_name, "snapshot": 1,
                                    "width": width, "height": height})
    topic = f"{server.publisher.base_topic}/crops/{line.name}/{snapshot_id}/0"
    return "ok", f"snapshot on {topic}", {"topic": topic, "camera": camera_name, "width": width, "height": height,
                                          "bytes": len(jpeg)}


def _thresholds_set(server: CommandServer, args: ThresholdArgs) -> tuple[str, str, dict]:
    (line,) = server.lines_for(args.line, one=True)
    for label, value in args.thresholds.items():
        if value is not None and not 0 < value < 1:
            raise CommandFailed("bad_request", f"threshold for {label!r} must be between 0 and 1, got {value}")
    if args.default is None and not args.thresholds:
        raise CommandFailed("bad_request", "give args.default and/or args.thresholds")
    if args.persist and server.config_file is not None:
        patch: dict = {}
        if args.default is not None:
            patch["default_threshold"] = args.default
        if args.thresholds:
            patch["thresholds"] = dict(args.thresholds)
        raw = merge_patch(server.config_file.read(), {"lines": {line.name: patch}})
        code, text, data = server.apply_config(raw, restart=False)
        return code, text, {**data, "persisted": True, "rule": _rule(line)}
    thresholds = {k: v for k, v in {**line.rule.thresholds, **args.thresholds}.items() if v is not None}
    default = line.rule.default_threshold if args.default is None else args.default
    line.rule = replace(line.rule, default_threshold=default, thresholds=thresholds)
    return "ok", "applied live (not written to the config file)", {"persisted": False, "rule": _rule(line)}


def _rule(line) -> dict:
    return {"default_threshold": line.rule.default_threshold, "thresholds": dict(line.rule.thresholds)}


def _log_level(server: CommandServer, args: LogLevelArgs) -> tuple[str, str, dict]:
    logger = logging.getLogger(args.logger)
    logger.setLevel(args.level)
    return "ok", f"log level of {args.logger or 'the agent'} set to {args.level} until the next restart", \
        {"logger": args.logger or "root", "level": args.level}


def _sync_job(server: CommandServer):
    job = getattr(server.app, "sync", None)
    if job is None:
        raise CommandFailed("not_available", "sync is not configured on this device (config section sync)",
                            {"capability": "sync"})
    return job


def _sync_now(server: CommandServer, args: SyncNowArgs) -> tuple[str, str, dict]:
    job = _sync_job(server)
    busy = job.running
    done = job.request(force=args.force)
    if not done.wait(args.wait_s):
        why = "after the sync that is running" if busy else "now"
        return "ok", f"sync started {why}; its outcome goes to sync/events and the retained sync topic", \
            {"started": True, "finished": False}
    outcome = job.last
    data = {"started": True, "finished": True, **outcome.payload()}
    if not outcome.ok and outcome.outcome != "skipped":
        raise CommandFailed("failed", f"sync {outcome.outcome}: {outcome.message}", data)
    return "ok", f"sync {outcome.outcome}: {outcome.message}", data


def _model_rollback(server: CommandServer, args: RollbackArgs) -> tuple[str, str, dict]:
    from ..sync.store import StoreError

    job = _sync_job(server)
    try:
        outcome = job.rollback(args.reason or "rolled back by command")
    except StoreError as exc:
        raise CommandFailed("failed", str(exc)) from None
    return "ok", outcome.message, outcome.payload()


def _restart(server: CommandServer, args: RestartArgs) -> tuple[str, str, dict]:
    if server.request_restart is None:
        raise CommandFailed("not_available", "this agent process cannot restart itself (not run by `edge-agent run`)",
                            {"capability": "restart"})
    return "restart_scheduled", "restarting: the config file is read again and every line rebuilt", \
        {"_after": server.request_restart, "reason": args.reason}


COMMANDS: dict[str, _Command] = {
    "ping": _Command(NoArgs, _ping),
    "status": _Command(NoArgs, _status),
    "config/get": _Command(NoArgs, _config_get),
    "config/set": _Command(ConfigSetArgs, _config_set, sets_state=True),
    "line/pause": _Command(LineArgs, _pause, sets_state=True),
    "line/resume": _Command(LineArgs, _resume, sets_state=True),
    "trigger": _Command(LineArgs, _trigger),
    "snapshot": _Command(SnapshotArgs, _snapshot),
    "thresholds/set": _Command(ThresholdArgs, _thresholds_set, sets_state=True),
    "sync/now": _Command(SyncNowArgs, _sync_now),
    "model/rollback": _Command(RollbackArgs, _model_rollback, sets_state=True),
    "log/level": _Command(LogLevelArgs, _log_level, sets_state=True),
    "restart": _Command(RestartArgs, _restart),
}
