"""Config loading: the example is valid, and every kind of mistake names file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "provisioning" / "inspection.example.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_example_config_is_valid():
    config = load_config(EXAMPLE)
    line = config.lines["inspect"]
    assert line.trigger.pin == 17
    assert config.models["defects"].path == EXAMPLE.parent / "../models/inspection-detector/int8"


@pytest.mark.parametrize(
    "old, new, needle, expected",
    [
        ("pin: 17 ", "pin: [17] ", "pin: [17]", "lines.inspect.trigger.pin: input should be an integer"),
        ("pin: 17 ", "pin: seventeen ", "pin: seventeen", "lines.inspect.trigger.pin: input should be an integer"),
        ("port: 502", "port: abc", "port: abc", "plc.port: input should be a valid integer"),
        ("pulse_ms: 50", "pulse_ms: 50\n      colour: red", "colour: red", "lines.inspect.reject_output.colour: unknown key"),
        ("scratch: 0.15", "scratch: 1.5", "thresholds:", "lines.inspect.thresholds: threshold for 'scratch' must be between 0 and 1"),
        ("camera: cam0\n    model", "camera: cam9\n    model", "camera: cam9", "lines.inspect.camera: no camera named 'cam9'"),
        ("type: gpio", "type: serial", "trigger:", "lines.inspect.trigger: input tag 'serial'"),
        ("device: CPU", "device: TPU", "device: TPU", "models.defects.device: input should be 'CPU', 'GPU', 'NPU' or 'AUTO'"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, old, new, needle, expected):
    assert_error_at(tmp_path, EXAMPLE, old, new, needle, expected)


def assert_error_at(tmp_path: Path, example: Path, old: str, new: str, needle: str, expected: str) -> None:
    """example with old replaced by new fails to load, naming the file, the line with needle, and expected."""
    text = example.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:{_line_of(text, needle)} {expected}" in str(info.value)


def test_missing_section_points_at_parent(tmp_path):
    text = EXAMPLE.read_text().replace("  id: line1-box1", "  # no id")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"{path}:{_line_of(text, 'device:')} device.id: required field is missing"):
        load_config(path)


def test_all_errors_reported_at_once(tmp_path):
    text = EXAMPLE.read_text().replace("pin: 17 ", "pin: x ").replace("port: 502", "port: 0")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert len(info.value.issues) == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lines: [", ":1: not valid YAML"),
        ("- a\n- b\n", ":1: the file must be a YAML mapping"),
        ("", ":1: the file must be a YAML mapping"),
    ],
)
def test_unparseable_files(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, text))


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path):
    ok = _cli("check-config", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    text = EXAMPLE.read_text().replace("pin: 17 ", "pin: [1] ")
    path = _write(tmp_path, text)
    bad = _cli("check-config", str(path))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"{path}:{_line_of(text, 'pin: [1]')} lines.inspect.trigger.pin: input should be an integer (BCM number) or a pin name like 'GPIO17'"
    assert "Traceback" not in bad.stderr


def test_run_with_bad_config_exits_2(tmp_path):
    path = _write(tmp_path, EXAMPLE.read_text().replace("port: 502", "port: 99999"))
    result = _cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "plc.port: input should be less than or equal to 65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_plc_handshake_timed_reject_and_webhook_config():
    from agent.config.schema import PlcConfig, RejectTimingConfig, WebhookConfig
    from pydantic import ValidationError

    assert PlcConfig(rtu={"port": "/dev/ttyUSB0"}).rtu.parity == "E"
    with pytest.raises(ValidationError, match="either host"):
        PlcConfig(host="10.0.0.5", rtu={"port": "/dev/ttyUSB0"})
    assert PlcConfig(host="10.0.0.5").registers.heartbeat == 108
    with pytest.raises(ValidationError, match="distance_m and belt_speed_mps"):
        RejectTimingConfig(mode="delay", distance_m=0.3)
    with pytest.raises(ValidationError, match="encoder_counts"):
        RejectTimingConfig(mode="encoder")
    assert WebhookConfig(url="http://pos.local/api").on == ["pass", "reject", "no_read"]


def test_yaml_1_2_booleans_only_true_and_false(tmp_path):
    """`on:` is a key and `no` a string, as a reader expects (YAML 1.1 would make them booleans)."""
    text = EXAMPLE.read_text()
    text = text.replace("  site: plant-a", "  site: no", 1)
    text = text.replace("    crops:   ", "    webhooks:\n      - url: http://127.0.0.1:9/pos\n        on: [reject]\n    crops:   ", 1)
    config = load_config(_write(tmp_path, text))
    assert config.device.site == "no"
    assert config.lines["inspect"].webhooks[0].on == ["reject"]
    assert config.lines["inspect"].reject_output.active_high is True  # true/false still are booleans


STREAM_CONFIG = """\
device: {id: street-box1}
mqtt: {host: 127.0.0.1}
models:
  people: {path: ../models/surveillance-detector/int8}
cameras:
  gate: {type: stream, url: "rtsp://10.0.0.5/main"}
  snap: {type: http_snapshot, url: "http://10.0.0.6/snap.jpg"}
lines:
  street:
    type: stream
    cameras: [gate]
    model: people
"""


def test_a_stream_line_needs_no_plc(tmp_path):
    config = load_config(_write(tmp_path, STREAM_CONFIG))
    assert config.plc is None and config.lines["street"].type == "stream"
    assert config.lines["street"].motion is not None  # motion-gated by default


@pytest.mark.parametrize("edit, expected", [
    ("    cameras: [snap]", "lines.street.cameras.0: camera 'snap' is an http_snapshot camera"),
    ("    cameras: [gate, nowhere]", "lines.street.cameras.1: no camera named 'nowhere'"),
    ("    cameras: [gate]\n    classifier: vehicles", "lines.street.classifier: no model named 'vehicles'"),
    ("    cameras: [gate]\n    classify_labels: [vehicle]", "lines.street.classify_labels: needs a classifier"),
    ("    cameras: [gate, gate]", "lines.street.cameras: camera 'gate' is listed twice"),
])
def test_stream_line_mistakes(tmp_path, edit, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, STREAM_CONFIG.replace("    cameras: [gate]", edit)))
    assert expected in str(info.value)


def test_a_stream_camera_is_not_shared(tmp_path):
    text = STREAM_CONFIG + """\
  door:
    camera: gate
    model: people
    trigger: {type: interval, period_ms: 1000}
"""
    with pytest.raises(ConfigError, match="lines.street.cameras.0: camera 'gate' is also read by line door"):
        load_config(_write(tmp_path, text))


def test_a_plc_trigger_needs_the_plc_section(tmp_path):
    text = STREAM_CONFIG.replace("  gate: {type: stream", "  cam: {type: http_snapshot, url: \"http://x/s.jpg\"}\n  gate: {type: stream") + """\
  door:
    camera: cam
    model: people
    trigger: {type: plc}
"""
    with pytest.raises(ConfigError, match="lines.door.trigger: a plc trigger needs the plc section"):
        load_config(_write(tmp_path, text))


def test_webhook_headers_keep_their_secrets_in_credential_files(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from agent.config.schema import WebhookConfig, read_credential
    from agent.control.commands import _redact

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "pos-token").write_text("Bearer abc\n")
    (tmp_path / "two-lines").write_text("Bearer abc\nX-Evil: 1\n")
    hook = WebhookConfig(url="http://pos.local/api", headers={"Authorization": "credential:pos-token", "X-Store": "12"})
    assert hook.headers["Authorization"] == "credential:pos-token"  # the config holds the reference only
    assert read_credential(hook.headers["Authorization"]) == "Bearer abc"
    assert read_credential("12") == "12"
    # config/get shows the reference and hides a value written in the config
    shown = _redact({"lines": {"l": {"webhooks": [hook.model_dump(mode="json")]}}})
    assert shown["lines"]["l"]["webhooks"][0]["headers"] == {"Authorization": "credential:pos-token", "X-Store": "***"}

    for headers, message in [({"Bad Name": "x"}, "header name 'Bad Name'"),
                             ({"Idempotency-Key": "x"}, "the agent sets it itself"),
                             ({"content-type": "text/plain"}, "the agent sets it itself"),
                             ({"X-A": "a\r\nX-B: b"}, "line break"),
                             ({"Authorization": "credential:missing"}, "credential missing: .* is not a file"),
                             ({"Authorization": "credential:two-lines"}, "holds more than one line")]:
        with pytest.raises(ValidationError, match=message):
            WebhookConfig(url="http://pos.local/api", headers=headers)
