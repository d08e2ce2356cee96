"""The config file's schema. Unknown keys are errors everywhere (extra="forbid")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FilePath, field_validator

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe inside MQTT topics and file names


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(Strict):
    id: str = Field(pattern=_ID, description="Device id: used in MQTT topics and logs.")
    site: str = ""


class MqttTls(Strict):
    ca: FilePath
    cert: FilePath | None = None
    key: FilePath | None = None


class MqttConfig(Strict):
    host: str
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("edge", pattern=r"^[A-Za-z0-9_./-]+$")
    client_id: str = ""
    keepalive_s: int = Field(30, ge=5, le=3600)
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None


class GpioConfig(Strict):
    # None: gpiozero's own choice (GPIOZERO_PIN_FACTORY, then its default for the board).
    pin_factory: Literal["lgpio", "rpigpio", "pigpio", "native", "mock"] | None = None


class PlcRegisters(Strict):
    inspection_id: int = Field(100, ge=0, le=65534)  # two registers, high word first
    result_code: int = Field(102, ge=0, le=65535)
    defect_count: int = Field(103, ge=0, le=65535)
    reject_coil: int = Field(10, ge=0, le=65535)


class PlcConfig(Strict):
    host: str
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=0, le=247)
    timeout_ms: int = Field(250, ge=10, le=5000)
    registers: PlcRegisters = PlcRegisters()


class ModelConfig(Strict):
    path: Path = Field(description="An OpenVINO IR folder (xml+bin+metadata.yaml) or .xml file.")
    device: Literal["CPU", "GPU", "NPU", "AUTO"] = "CPU"


class HttpSnapshotCamera(Strict):
    """Any camera (or the simulator) that serves a JPEG/PNG still on an HTTP URL."""

    type: Literal["http_snapshot"]
    url: str = Field(pattern=r"^https?://")
    timeout_ms: int = Field(500, ge=10, le=10000)


CameraConfig = Annotated[Union[HttpSnapshotCamera], Field(discriminator="type")]


_PIN_NAME = re.compile(r"^(GPIO|BCM|BOARD|WPI)\d+$|^J\d+:\d+$")


def _pin_id(value):
    """A BCM number (17) or a gpiozero pin name ('GPIO17', 'BOARD11', 'J8:11')."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 63:
            raise ValueError("pin number should be between 0 and 63 (BCM numbering)")
        return value
    if isinstance(value, str) and _PIN_NAME.match(value.strip()):
        return value.strip()
    raise ValueError("input should be an integer (BCM number) or a pin name like 'GPIO17'")


PinId = Annotated[Union[int, str], BeforeValidator(_pin_id)]


class GpioTrigger(Strict):
    """A photoelectric (or any digital) sensor on a GPIO input."""

    type: Literal["gpio"]
    pin: PinId
    edge: Literal["rising", "falling"] = "rising"
    pull_up: bool = False
    debounce_ms: float = Field(5.0, ge=0, le=1000)



class IntervalTriggerConfig(Strict):
    """Fires every period_ms: time-lapse inspection, or a line without a sensor."""

    type: Literal["interval"]
    period_ms: float = Field(ge=10, le=86_400_000)


TriggerConfig = Annotated[Union[GpioTrigger, IntervalTriggerConfig], Field(discriminator="type")]


class RejectOutput(Strict):
    pin: PinId
    pulse_ms: float = Field(50.0, gt=0, le=10000)
    active_high: bool = True


class CropConfig(Strict):
    margin_px: int = Field(8, ge=0, le=512)
    min_size_px: int = Field(32, ge=1, le=4096)
    max_per_event: int = Field(8, ge=0, le=64)
    jpeg_quality: int = Field(90, ge=10, le=100)


class InspectionLine(Strict):
    type: Literal["inspection"] = "inspection"
    camera: str
    trigger: TriggerConfig
    model: str
    # Optional second stage: a classifier that grades each defect crop (e.g. minor/major/critical).
    severity_model: str | None = None
    # With severity_model: only these grades reject; None means every defect rejects.
    reject_severities: list[str] | None = None
    # Per-class score thresholds; classes not listed use default_threshold.
    thresholds: dict[str, float] = {}
    default_threshold: float = Field(0.4, gt=0, lt=1)
    reject_output: RejectOutput | None = None
    crops: CropConfig = CropConfig()
    queue_size: int = Field(64, ge=1, le=10000)

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]):
        for label, threshold in value.items():
            if not 0 < threshold < 1:
                raise ValueError(f"threshold for {label!r} must be between 0 and 1, got {threshold}")
        return value


class AgentConfig(Strict):
    device: DeviceConfig
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Compiled-model cache (OpenVINO CACHE_DIR): restarts skip recompiling. None: no cache.
    model_cache_dir: Path | None = None
    mqtt: MqttConfig
    plc: PlcConfig
    gpio: GpioConfig = GpioConfig()
    models: dict[str, ModelConfig]
    cameras: dict[str, CameraConfig]
    lines: dict[str, InspectionLine]

    @field_validator("models", "cameras", "lines")
    @classmethod
    def _names_are_ids(cls, value: dict):
        for name in value:
            if not re.match(_ID, name):
                raise ValueError(f"name {name!r} may only use letters, digits, '_', '.' and '-'")
        return value

    def reference_issues(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-references a field validator cannot see: (path, message) pairs."""
        issues = []
        if self.mqtt.password is not None and self.mqtt.username is None:
            issues.append((("mqtt", "password"), "a password needs a username"))
        if not self.lines:
            issues.append((("lines",), "at least one line is needed"))
        for name, line in self.lines.items():
            if line.camera not in self.cameras:
                known = ", ".join(self.cameras) or "none"
                issues.append((("lines", name, "camera"), f"no camera named {line.camera!r} (cameras: {known})"))
            for key in ("model", "severity_model"):
                ref = getattr(line, key)
                if ref is not None and ref not in self.models:
                    known = ", ".join(self.models) or "none"
                    issues.append((("lines", name, key), f"no model named {ref!r} (models: {known})"))
            if line.reject_severities is not None and line.severity_model is None:
                issues.append((("lines", name, "reject_severities"), "needs a severity_model to grade defects"))
        return issues
