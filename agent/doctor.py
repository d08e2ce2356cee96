"""`edge-agent doctor`: is this device able to run? A pass/fail table; exit status 1 on a failure.

Checks, in order: the config; each model loads and compiles; each camera gives a frame; the PLC
accepts a Modbus TCP connection; the broker completes the TLS handshake (or a plain TCP
connection) and accepts an MQTT CONNECT; the GPIO pins can be claimed; each scale gives a reading; each webhook's receiver
answers a HEAD request; the clock is sane (and inside the TLS certificates'
validity); the disks have free space. Every check has a timeout. A check that cannot run because
an earlier one failed (no config, no model) is skipped, not failed.

The broker check speaks a minimal MQTT 3.1.1 CONNECT itself, with a client id of its own, so it
neither needs the agent's MQTT client nor disconnects a running agent.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from .config.schema import walk_triggers

DEFAULT_STATE_DIRS = (Path("/var/lib/edge-agent"), Path("/var/cache/edge-agent"))
# This release was built after this moment; a clock before it has no RTC/NTP time yet, and TLS
# certificates will look "not yet valid".
CLOCK_FLOOR = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_CONNACK_CODES = {
    1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str

    @property
    def result(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.ok]


def run_checks(config_path: str | Path, *, state_dirs: list[Path] | None = None, min_free_mb: int = 500,
               timeout_s: float = 3.0, now: dt.datetime | None = None) -> list[Check]:
    from .config import ConfigError, load_config

    checks: list[Check] = []
    config = None
    try:
        config = load_config(config_path)
        checks.append(Check("config", True, f"device {config.device.id}, lines: {', '.join(config.lines)}"))
    except ConfigError as exc:
        checks.append(Check("config", False, str(exc).replace("\n", "; ")))
    if config is not None:
        checks += [_check_model(name, model) for name, model in config.models.items()]
        checks += [_check_camera(name, camera, timeout_s) for name, camera in config.cameras.items()]
        if config.plc is not None:
            checks.append(_check_plc(config.plc, timeout_s))
        checks.append(_check_broker(config, timeout_s))
        gpio = _check_gpio(config)
        checks += [gpio] if gpio is not None else []
        checks += [_check_scale(line, trigger, timeout_s) for line, line_config in config.lines.items()
                   for _, trigger in walk_triggers(getattr(line_config, "trigger", None))
                   if getattr(trigger, "type", None) == "scale"]
        checks += [_check_webhook(f"{line}/{hook.name_at(i)}", hook, timeout_s)
                   for line, line_config in config.lines.items()
                   for i, hook in enumerate(getattr(line_config, "webhooks", []))]
    else:
        checks += [Check(name, None, "needs a valid config") for name in ("models", "cameras", "plc", "broker")]
    checks.append(_check_clock(config, now or dt.datetime.now(dt.timezone.utc)))
    checks += [_check_disk(path, min_free_mb) for path in (state_dirs or DEFAULT_STATE_DIRS)]
    return checks


def render(config_path: str | Path, checks: list[Check]) -> str:
    width = max(len("check"), *(len(c.name) for c in checks))
    rows = [f"edge-agent doctor: {config_path}", f"  {'check':<{width}}  result  detail"]
    rows += [f"  {c.name:<{width}}  {c.result:<6}  {c.detail}" for c in checks]
    failed = sum(c.ok is False for c in checks)
    passed = sum(c.ok is True for c in checks)
    skipped = len(checks) - failed - passed
    rows.append(f"{len(checks)} checks: {passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(rows)


def _check_model(name: str, model_config) -> Check:
    from .infer.engine import Model, ModelLoadError

    started = time.monotonic()
    try:
        model = Model(model_config.path, device=model_config.device)
        model.compiled(model.info.input_size)
    except ModelLoadError as exc:
        return Check(f"model {name}", False, str(exc))
    except RuntimeError as exc:  # OpenVINO itself failed (device, plugin)
        return Check(f"model {name}", False, f"{model_config.path}: {exc}")
    info = model.info
    return Check(f"model {name}", True, f"{info.path.name}: {info.adapter}, {len(info.names)} classes, "
                                        f"compiled for {model_config.device} in {(time.monotonic() - started) * 1000:.0f} ms")


def _check_camera(name: str, camera_config, timeout_s: float) -> Check:
    from .app import _make_camera

    where = getattr(camera_config, "url", None) or getattr(camera_config, "device", None) or getattr(camera_config, "path", "")
    where = str(where).split("@")[-1]  # never print a password in a stream URL
    started = time.monotonic()
    camera = _make_camera(name, camera_config)
    try:
        camera.start()
        frame = camera.grab(timeout_s=max(timeout_s, camera_config.timeout_ms / 1000))
        error = getattr(camera, "last_error", None) or camera.stats().get("last_error")
    finally:
        camera.close()
    if frame is None:
        return Check(f"camera {name}", False, f"no frame from {where}: {error or 'timed out'}")
    height, width = frame.image.shape[:2]
    return Check(f"camera {name}", True, f"{width}x{height} frame from {where} in "
                                         f"{(time.monotonic() - started) * 1000:.0f} ms")


def _check_plc(plc_config, timeout_s: float) -> Check:
    from .act.plc import ModbusPlc, PlcError, PlcRegisterMap, RtuLink, TcpLink

    rtu = plc_config.rtu
    link = TcpLink(plc_config.host, plc_config.port) if rtu is None else \
        RtuLink(rtu.port, rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits)
    where = f"{plc_config.host}:{plc_config.port}" if rtu is None else rtu.port
    try:
        plc = ModbusPlc(link, device_id=plc_config.device_id, timeout_s=timeout_s, clear_on_connect=False,
                        register_map=PlcRegisterMap(**plc_config.registers.model_dump()))
    except PlcError as exc:
        return Check("plc", False, str(exc))
    with plc:
        deadline = time.monotonic() + timeout_s
        while not plc.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        connected, error = plc.connected, plc.stats().get("last_error")
    kind = "Modbus TCP" if rtu is None else "Modbus RTU"
    if connected:
        return Check("plc", True, f"{kind} connection to {where}")
    settings = "plc.host/plc.port" if rtu is None else "plc.rtu (port, baudrate, parity) and the PLC's unit id"
    return Check("plc", False, f"{error or f'no {kind} connection to {where}'}: check the PLC is on and {settings}")


def _check_gpio(config) -> Check | None:
    """The pin factory loads and every pin the config names can be claimed (outputs are not
    driven). None: the config uses no GPIO."""
    from .gpio import GpioError, make_pin_factory, probe_pins

    inputs, outputs = [], []
    for line, line_config in config.lines.items():
        for _, trigger in walk_triggers(getattr(line_config, "trigger", None)):
            if getattr(trigger, "type", None) == "gpio":
                inputs.append((f"{line} trigger", trigger.pin, trigger.pull_up))
        for key in ("reject_output", "stop_line_output"):
            output = getattr(line_config, key, None)
            if output is not None:
                outputs.append((f"{line} {key}", output.pin))
    light = config.gpio.stack_light
    if light is not None:
        outputs += [(f"stack light {colour}", pin) for colour in ("green", "amber", "red", "buzzer")
                    if (pin := getattr(light, colour)) is not None]
    if not inputs and not outputs:
        return None
    try:
        factory = make_pin_factory(config.gpio.pin_factory)
    except GpioError as exc:
        return Check("gpio", False, str(exc))
    try:
        problems = probe_pins(factory, inputs, outputs)
    finally:
        factory.close()
    kind = type(factory).__name__
    if problems:
        return Check("gpio", False, f"{kind}: " + "; ".join(problems) + " (a pin in use: is the agent running?)")
    return Check("gpio", True, f"{kind}: {len(inputs)} inputs and {len(outputs)} outputs claimed "
                               f"({', '.join(f'{label} {pin}' for label, pin, *_ in inputs + outputs)})")


def _check_scale(line: str, trigger, timeout_s: float) -> Check:
    """The line's scale answers with a weight within the timeout: its own trigger, on the port,
    firing nothing."""
    from .ingest.scale import ScaleTrigger
    from .serial_port import SerialPort

    name = f"scale {line}"
    port = SerialPort(trigger.port, trigger.baudrate, trigger.bytesize, trigger.parity, trigger.stopbits)
    scale = ScaleTrigger(port, trigger.protocol, lambda *args, **kwargs: None,
                         poll_interval_s=trigger.poll_interval_ms / 1000, reply_timeout_s=trigger.reply_timeout_ms / 1000,
                         toledo_checksum=trigger.checksum, name=f"doctor-{line}")
    try:
        deadline = time.monotonic() + max(timeout_s, 4 * trigger.reply_timeout_ms / 1000)
        while scale.counters["readings"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = scale.stats()
    finally:
        scale.close()
    settings = f"{trigger.protocol} on {trigger.port} at {trigger.baudrate} {trigger.bytesize}{trigger.parity}{trigger.stopbits}"
    if stats["readings"]:
        weight = "no weight" if stats["weight_g"] is None else f"{stats['weight_g']:.1f} g"
        return Check(name, True, f"{settings}: {weight} ({stats['state']})")
    if not stats["connects"]:
        return Check(name, False, f"{stats['last_fault'] or f'cannot open {trigger.port}'}: check the cable "
                                  "and the port name")
    return Check(name, False, f"{settings}: no reading within the timeout ({stats['last_fault'] or 'silent'}): "
                              "check the protocol, baud rate and parity against the scale's settings")


def _check_webhook(target: str, hook, timeout_s: float) -> Check:
    """A HEAD request with the webhook's headers: any answer but 401/403 shows the receiver is
    reachable (HEAD has no side effects; no event is sent)."""
    import requests

    from .config.schema import read_credential

    name = f"webhook {target}"
    try:
        headers = {key: read_credential(value) for key, value in hook.headers.items()}
    except ValueError as exc:
        return Check(name, False, str(exc))
    try:
        response = requests.head(hook.url, headers=headers, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        from .act.http import request_error

        return Check(name, False, f"cannot reach {hook.url}: {request_error(exc)}")
    if response.status_code in (401, 403):
        return Check(name, False, f"{hook.url} answers HTTP {response.status_code} to HEAD: it refuses the "
                                  "credentials (check the webhook's headers)")
    return Check(name, True, f"{hook.url} answers (HTTP {response.status_code} to HEAD)")


def _check_broker(config, timeout_s: float) -> Check:
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        sock = socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s)
    except OSError as exc:
        return Check("broker", False, f"no TCP connection to {where}: {exc}")
    try:
        transport = "plain TCP (no TLS)"
        if mqtt.tls is not None:
            context = ssl.create_default_context(cafile=str(mqtt.tls.ca))
            if mqtt.tls.cert:
                context.load_cert_chain(str(mqtt.tls.cert), str(mqtt.tls.key) if mqtt.tls.key else None)
            try:
                sock = context.wrap_socket(sock, server_hostname=mqtt.host)
            except (ssl.SSLError, OSError) as exc:
                return Check("broker", False, f"TLS handshake with {where} failed: {exc}")
            peer = dict(item[0] for item in sock.getpeercert().get("subject", ()))
            transport = f"{sock.version()} handshake, server {peer.get('commonName', '?')}" + (
                ", client certificate" if mqtt.tls.cert else "")
        client_id = f"{mqtt.client_id or f'edge-agent-{config.device.id}'}-doctor"
        code = _mqtt_connect(sock, client_id, mqtt.username, mqtt.password)
    except (OSError, ValueError) as exc:
        return Check("broker", False, f"{where}: no MQTT answer: {exc}")
    finally:
        sock.close()
    if code != 0:
        return Check("broker", False, f"{where}: {transport}; CONNECT refused: {_CONNACK_CODES.get(code, code)}")
    return Check("broker", True, f"{where}: {transport}; MQTT CONNECT accepted")


def _mqtt_connect(sock: socket.socket, client_id: str, username: str | None, password: str | None) -> int:
    """One MQTT 3.1.1 CONNECT (clean session), its CONNACK's return code, then DISCONNECT."""
    def string(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + string(client_id)
    body += (string(username) if username is not None else b"") + (string(password) if password is not None else b"")
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    sock.sendall(b"\x10" + encoded + body)
    reply = b""
    while len(reply) < 4:
        chunk = sock.recv(4 - len(reply))
        if not chunk:
            raise ValueError("the broker closed the connection")
        reply += chunk
    if reply[0] != 0x20 or reply[1] != 2:
        raise ValueError(f"not an MQTT CONNACK: {reply.hex()}")
    if reply[3] == 0:
        sock.sendall(b"\xe0\x00")
    return reply[3]


def _check_clock(config, now: dt.datetime) -> Check:
    if now < CLOCK_FLOOR:
        return Check("clock", False, f"{now:%Y-%m-%d %H:%M} UTC is before this release was built: no RTC or "
                                     "NTP time yet (check timedatectl / the NTP server)")
    problems = []
    tls = config.mqtt.tls if config is not None else None
    for label, path in (("CA", tls and tls.ca), ("client certificate", tls and tls.cert)):
        if path:
            problems += _outside_validity(label, Path(path), now)
    if problems:
        return Check("clock", False, "; ".join(problems))
    synced = "synchronized (systemd-timesyncd)" if TIMESYNC_FLAG.exists() else "NTP sync not confirmed"
    return Check("clock", True, f"{now:%Y-%m-%d %H:%M:%S} UTC, {synced}")


def _outside_validity(label: str, path: Path, now: dt.datetime) -> list[str]:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [f"{label} {path}: unreadable ({exc})"]
    if now < cert.not_valid_before_utc:
        return [f"{label} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: the clock is behind"]
    if now > cert.not_valid_after_utc:
        return [f"{label} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"]
    return []


def _check_disk(path: Path, min_free_mb: int) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mb = shutil.disk_usage(existing).free / 1e6
    detail = f"{free_mb / 1000:.1f} GB free on {existing}" + ("" if existing == path else f" (for {path})")
    if free_mb < min_free_mb:
        return Check(f"disk {path}", False, f"{detail}, under {min_free_mb} MB")
    return Check(f"disk {path}", True, detail)
