"""The config file's schema. Unknown keys are errors everywhere (extra="forbid")."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, FilePath, Tag, field_validator, model_validator

from .base import ID_PATTERN as _ID
from .base import Strict


class DeviceConfig(Strict):
    id: str = Field(pattern=_ID, description="Device id: used in MQTT topics and logs.")
    site: str = ""


CREDENTIAL_PREFIX = "credential:"
CREDSTORE = "/etc/credstore"  # where systemd's LoadCredential=NAME finds a credential on disk


def _credential_path(value):
    """`credential:NAME`: the file systemd passed in with LoadCredential= ($CREDENTIALS_DIRECTORY/NAME);
    outside the service (doctor, check-config), the same file in the credential store."""
    if not (isinstance(value, str) and value.startswith(CREDENTIAL_PREFIX)):
        return value
    name = value[len(CREDENTIAL_PREFIX):]
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{value!r}: expected credential:NAME, a file name without '/'")
    path = Path(os.environ.get("CREDENTIALS_DIRECTORY") or CREDSTORE) / name
    if not path.is_file():
        raise ValueError(f"credential {name}: {path} is not a file, or not readable by this user "
                         "(`edge-agent provision` installs it; check as root: sudo edge-agent doctor)")
    return str(path)


CredentialFile = Annotated[FilePath, BeforeValidator(_credential_path)]


def read_credential(value: str) -> str:
    """A config value that may be `credential:NAME`: that file's text (its trailing newline
    stripped), else the value itself. For secrets the config keeps only a reference to."""
    if not value.startswith(CREDENTIAL_PREFIX):
        return value
    path = Path(_credential_path(value))
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"credential {value[len(CREDENTIAL_PREFIX):]}: cannot read {path}: {exc}") from None


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_OWN_HEADERS = ("content-type", "content-length", "host", "idempotency-key", "transfer-encoding")


class MqttTls(Strict):
    """Paths, or `credential:NAME` for a file passed in by systemd (LoadCredential=)."""

    ca: CredentialFile
    cert: CredentialFile | None = None
    key: CredentialFile | None = None


class MqttConfig(Strict):
    host: str
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("edge", pattern=r"^[A-Za-z0-9_./-]+$")
    client_id: str = ""
    keepalive_s: int = Field(30, ge=5, le=3600)
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None


class OutboxConfig(Strict):
    """The durable store-and-forward queue between the lines and the broker (SQLite)."""

    path: Path = Path("/var/lib/edge-agent/outbox.db")
    max_bytes: int = Field(2 * 1024**3, ge=65536, description="Stored bytes; the oldest crops go first when full.")
    max_age_h: float = Field(72.0, gt=0, le=24 * 365)
    # Backlog messages per second after an outage; live messages always go first. 0: no limit.
    drain_rate_per_s: float = Field(200.0, ge=0)
    inflight_window: int = Field(64, ge=1, le=10000)
    # MQTT message expiry, counted from when the message was stored. None: no expiry.
    message_expiry_s: int | None = Field(72 * 3600, ge=1, le=0xFFFFFFFF)
    stats_interval_s: float = Field(60.0, ge=1, le=86400)


class GpioConfig(Strict):
    # None: gpiozero's own choice (GPIOZERO_PIN_FACTORY, then its default for the board).
    pin_factory: Literal["lgpio", "rpigpio", "pigpio", "native", "mock"] | None = None
    stack_light: StackLightConfig | None = None  # green healthy, amber a link down, red faulted (+ buzzer)


class PlcRegisters(Strict):
    """0-based Modbus addresses; the result block is inspection_id .. inspection_id + 7 (README: PLC handshake)."""

    inspection_id: int = Field(100, ge=0, le=65528)  # two registers, high word first
    result_code: int = Field(102, ge=0, le=65535)
    defect_count: int = Field(103, ge=0, le=65535)
    defect_class: int = Field(104, ge=0, le=65535)
    result_valid: int = Field(105, ge=0, le=65535)
    trigger_id: int = Field(106, ge=0, le=65534)  # two registers
    heartbeat: int = Field(108, ge=0, le=65535)
    online: int = Field(109, ge=0, le=65535)
    encoder: int = Field(110, ge=0, le=65534)  # two registers, written by the PLC
    reject_coil: int = Field(10, ge=0, le=65535)
    # The part signal, written by the PLC and polled by a `type: plc` trigger.
    part_present: int = Field(112, ge=0, le=65535)
    plc_trigger_id: int = Field(113, ge=0, le=65534)  # two registers
    part_present_coil: int = Field(11, ge=0, le=65535)

    @model_validator(mode="after")
    def _consistent(self):
        from ..act.plc import PlcError, PlcRegisterMap  # the adapter owns the map's rules

        try:
            PlcRegisterMap(**self.model_dump())
        except PlcError as exc:
            raise ValueError(str(exc).removeprefix("PLC register map: ")) from None
        return self


class PlcRtu(Strict):
    """Modbus RTU on a serial port instead of TCP."""

    port: str = Field(min_length=1)  # /dev/ttyUSB0, /dev/serial/by-id/...
    baudrate: int = Field(19200, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1


class PlcConfig(Strict):
    host: str = ""  # Modbus TCP; leave empty and set rtu for a serial PLC
    port: int = Field(502, ge=1, le=65535)
    rtu: PlcRtu | None = None
    device_id: int = Field(1, ge=0, le=247)
    timeout_ms: int = Field(250, ge=10, le=5000)
    verify_writes: bool = True  # read every write back
    heartbeat_ms: int = Field(500, ge=50, le=60000)
    registers: PlcRegisters = PlcRegisters()

    @model_validator(mode="after")
    def _one_link(self):
        if bool(self.host) == (self.rtu is not None):
            raise ValueError("set either host (Modbus TCP) or rtu (Modbus RTU on a serial port), not both or neither")
        return self


class ModelConfig(Strict):
    path: Path = Field(description="An OpenVINO IR folder (xml+bin+metadata.yaml) or .xml file.")
    device: Literal["CPU", "GPU", "NPU", "AUTO"] = "CPU"
    # Where the frame is resized to the model input: auto = cv2 on the host for CPU (much cheaper
    # than OpenVINO's in-graph Interpolate there), in the graph for GPU/NPU. Padding, colour order,
    # layout and scaling always run in the graph.
    resize: Literal["auto", "graph", "host"] = "auto"
    # What layers that are not quantised run in: auto = the device's choice (a CPU with AVX-512
    # BF16 or AMX runs an FP32 IR in bf16, faster, slightly less exact); f32 keeps FP32.
    precision: Literal["auto", "f32", "bf16", "f16"] = "auto"


class HttpSnapshotCamera(Strict):
    """Any camera (or the simulator) that serves a JPEG/PNG still on an HTTP URL."""

    type: Literal["http_snapshot"]
    url: str = Field(pattern=r"^https?://")
    timeout_ms: int = Field(500, ge=10, le=10000)


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{path}: use an absolute path")
    return path


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]


class LiveCamera(Strict):
    """Read continuously by its own thread; only the newest frame is kept."""

    timeout_ms: int = Field(1000, ge=10, le=60000)  # a triggered capture waits this long for its frame
    stall_timeout_s: float = Field(3.0, gt=0, le=300)  # no frame for this long: offline, and reconnect
    reconnect_max_s: float = Field(8.0, ge=0.1, le=600)  # the longest wait between reconnect attempts


class V4l2Camera(LiveCamera):
    """A USB (UVC) or other V4L2 camera."""

    type: Literal["v4l2"]
    device: Union[Annotated[int, Field(ge=0, le=255)], Annotated[str, Field(pattern=r"^/dev/")]]
    width: int | None = Field(None, ge=16, le=16384)
    height: int | None = Field(None, ge=16, le=16384)
    fps: float | None = Field(None, gt=0, le=1000)
    fourcc: str | None = Field(None, pattern=r"^[A-Z0-9 ]{4}$")  # MJPG, YUYV, ...


class StreamCamera(LiveCamera):
    """RTSP, RTMP, HTTP, UDP, TCP or SRT, through OpenCV's FFmpeg backend."""

    type: Literal["stream"]
    url: str = Field(pattern=r"^(rtsps?|rtmps?|https?|udp|tcp|srt)://")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_ms: int = Field(5000, ge=100, le=60000)
    read_timeout_ms: int = Field(3000, ge=100, le=60000)


class FileCamera(LiveCamera):
    """A video file played in real time, as if it were a camera."""

    type: Literal["file"]
    path: AbsolutePath
    fps: float | None = Field(None, gt=0, le=1000)  # None: the file's own frame rate
    loop: bool = True


class FolderCamera(LiveCamera):
    """The images of a folder in name order, one every 1/fps seconds."""

    type: Literal["folder"]
    path: AbsolutePath
    fps: float = Field(1.0, gt=0, le=1000)
    loop: bool = True


CameraConfig = Annotated[
    Union[HttpSnapshotCamera, V4l2Camera, StreamCamera, FileCamera, FolderCamera], Field(discriminator="type")
]


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


class MotionTriggerConfig(Strict):
    """Fires when something moves in front of the camera (frame differencing)."""

    type: Literal["motion"]
    camera: str | None = None  # None: the line's own camera
    threshold: int = Field(25, ge=1, le=255)  # sensitivity: the grey-level change that counts
    min_area: float = Field(0.01, gt=0, lt=1)  # fraction of the unmasked picture that must change
    lighting_limit: float = Field(0.8, gt=0, le=1)  # a bigger change is lighting, not motion
    scale_height: int = Field(120, ge=16, le=2160)
    background_alpha: float = Field(0.05, gt=0, le=1)
    cooldown_ms: float = Field(1000, ge=0, le=3_600_000)
    quiet_frames: int = Field(2, ge=1, le=1000)  # still frames before new motion counts as a new start
    # While motion goes on without a still frame, fire again this often (None: once per start).
    repeat_ms: float | None = Field(None, gt=0, le=3_600_000)
    max_fps: float | None = Field(None, gt=0, le=240)  # None: every frame the camera delivers
    mask: list[list[tuple[float, float]]] = []  # polygons [[x, y], ...] in frame pixels: ignored

    @field_validator("mask")
    @classmethod
    def _polygons(cls, value):
        for polygon in value:
            if len(polygon) < 3:
                raise ValueError("each mask polygon needs at least 3 points [x, y]")
        return value


class ScaleTriggerConfig(Strict):
    """A serial scale: fires when the weight settles at a value changed by over threshold_g."""

    type: Literal["scale"]
    port: str = Field(min_length=1)  # /dev/ttyUSB0, /dev/serial/by-id/..., or socket://host:port
    protocol: Literal["mtsics", "toledo"]
    baudrate: int = Field(9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    threshold_g: float = Field(5.0, gt=0)
    direction: Literal["increase", "decrease", "any"] = "increase"
    confirm_readings: int = Field(2, ge=1, le=50)  # consecutive stable readings that must agree
    poll_interval_ms: float = Field(100, ge=10, le=10000)  # MT-SICS: how often SI is sent
    reply_timeout_ms: float = Field(500, ge=10, le=10000)
    unstable_after_s: float = Field(10.0, gt=0, le=3600)  # moving longer than this is a fault
    checksum: bool = True  # Toledo: frames end with a checksum byte


class PlcTriggerConfig(Strict):
    """Polls the PLC's part signal (plc.registers part_present / plc_trigger_id / part_present_coil)."""

    type: Literal["plc"]
    # trigger_id: each new trigger id fires, and the result echoes it; part_present: the rising edge
    # of the part-present level fires (a PLC without an id register; the line's own number is echoed).
    fire_on: Literal["trigger_id", "part_present"] = "trigger_id"
    part_present: Literal["register", "coil"] = "register"  # where the PLC puts the level
    poll_ms: float = Field(10, ge=1, le=10000)
    # A change found after a longer gap in polling (or after a reconnect) is stale: counted, never fired.
    stale_after_ms: float = Field(250, ge=1, le=60000)


class AllOfTrigger(Strict):
    """Fires when every member has fired within window_ms (e.g. motion and a settled weight)."""

    type: Literal["all_of"]
    members: list[TriggerConfig] = Field(min_length=2)
    window_ms: float = Field(2000, gt=0, le=3_600_000)
    cooldown_ms: float = Field(0, ge=0, le=3_600_000)


class AnyOfTrigger(Strict):
    """Fires when any member fires."""

    type: Literal["any_of"]
    members: list[TriggerConfig] = Field(min_length=2)
    cooldown_ms: float = Field(0, ge=0, le=3_600_000)  # two sensors on the same part fire once


TriggerConfig = Annotated[
    Union[GpioTrigger, IntervalTriggerConfig, MotionTriggerConfig, ScaleTriggerConfig, PlcTriggerConfig,
          AllOfTrigger, AnyOfTrigger],
    Field(discriminator="type"),
]
AllOfTrigger.model_rebuild()
AnyOfTrigger.model_rebuild()


def walk_triggers(trigger, path: tuple = ()):
    """(path, trigger) for a trigger and every member nested in it; path is relative to it."""
    yield path, trigger
    for i, member in enumerate(getattr(trigger, "members", ())):
        yield from walk_triggers(member, path + ("members", i))


class BurstConfig(Strict):
    """Take `frames` frames from the trigger's own on, and inspect the sharpest."""

    frames: int = Field(3, ge=2, le=30)


class RejectOutput(Strict):
    pin: PinId
    pulse_ms: float = Field(50.0, gt=0, le=10000)
    active_high: bool = True


class OutputPin(Strict):
    pin: PinId
    active_high: bool = True


class RejectTimingConfig(Strict):
    """The reject station is downstream of the camera: fire when the part gets there.

    delay: travel time = distance_m / belt_speed_mps. encoder: encoder_counts after the
    count (PLC encoder register) at the part's sensor edge.
    """

    mode: Literal["delay", "encoder"] = "delay"
    distance_m: float | None = Field(None, gt=0, le=100)
    belt_speed_mps: float | None = Field(None, gt=0, le=20)
    encoder_counts: int | None = Field(None, gt=0)
    decision_margin_ms: float = Field(20, ge=0, le=10000)  # a result later than arrival - margin is late
    actuator_lead_ms: float = Field(0, ge=0, le=10000)  # fire early by the valve/arm's own delay
    fail_action: Literal["reject", "stop_line"] = "reject"  # for a part without a timely PASS

    @model_validator(mode="after")
    def _mode_fields(self):
        if self.mode == "delay" and (self.distance_m is None or self.belt_speed_mps is None):
            raise ValueError("mode delay needs distance_m and belt_speed_mps")
        if self.mode == "encoder" and self.encoder_counts is None:
            raise ValueError("mode encoder needs encoder_counts (counts from camera to reject station)")
        return self


class WebhookConfig(Strict):
    """POST each event (JSON, Idempotency-Key: event_id) to a POS or webhook. Calls wait in the
    outbox file until answered, refused (4xx), expired (max_age_h) or evicted (the bounds)."""

    # The calls' queue in the outbox file and in health (LINE/NAME); keep it when the url changes,
    # so the calls waiting follow. Default: webhook0, webhook1, ... in list order.
    name: str | None = Field(None, pattern=_ID)
    url: str = Field(pattern=r"^https?://")
    on: list[Literal["pass", "reject", "no_read"]] = ["pass", "reject", "no_read"]
    timeout_ms: int = Field(2000, ge=10, le=60000)  # connect, and each read
    backoff_ms: int = Field(500, ge=10, le=600000)  # the first retry's wait; doubles per failure, with jitter
    backoff_max_ms: int = Field(60000, ge=10, le=3600000)
    max_age_h: float = Field(24.0, gt=0, le=24 * 365)  # an older call is expired, counted
    max_pending: int = Field(10000, ge=1, le=10_000_000)  # calls kept; the oldest is evicted, counted
    max_bytes: int = Field(64 * 1024**2, ge=4096)
    # Sent with every call, e.g. {Authorization: credential:pos-token}: a value credential:NAME
    # is read from that file (systemd's LoadCredential=), so the secret stays out of the config.
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r}: letters, digits and !#$%&'*+.^_`|~- only")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name}: the agent sets it itself; remove it")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"header {name}: the value has a line break or NUL")
            if any(c in read_credential(text) for c in "\r\n\0"):  # also: the credential file exists
                raise ValueError(f"header {name}: {text} holds more than one line")
        return value

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data):
        if isinstance(data, dict):
            for key in ("retries", "queue_size"):
                if key in data:
                    raise ValueError(f"{key} is gone: failed calls now wait in the outbox file until max_age_h "
                                     "(bounded by max_pending and max_bytes); remove the key")
        return data

    def name_at(self, index: int) -> str:
        """Its name, for the webhook at `index` in its line's list."""
        return self.name or f"webhook{index}"

    @model_validator(mode="after")
    def _backoff_order(self):
        if self.backoff_max_ms < self.backoff_ms:
            raise ValueError(f"backoff_max_ms {self.backoff_max_ms} is below backoff_ms {self.backoff_ms}")
        return self


class StackLightConfig(Strict):
    green: PinId | None = None
    amber: PinId | None = None
    red: PinId | None = None
    buzzer: PinId | None = None
    active_high: bool = True


class CropConfig(Strict):
    margin_px: int = Field(8, ge=0, le=512)
    min_size_px: int = Field(32, ge=1, le=4096)
    max_per_event: int = Field(8, ge=0, le=64)
    jpeg_quality: int = Field(90, ge=10, le=100)


def _thresholds_in_range(value: dict[str, float]) -> dict[str, float]:
    for label, threshold in value.items():
        if not 0 < threshold < 1:
            raise ValueError(f"threshold for {label!r} must be between 0 and 1, got {threshold}")
    return value


Thresholds = Annotated[dict[str, float], AfterValidator(_thresholds_in_range)]


def _webhook_names_unique(value: list[WebhookConfig]) -> list[WebhookConfig]:
    names = [hook.name_at(i) for i, hook in enumerate(value)]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"webhook name {twice[0]!r} is used twice: give each webhook its own name")
    return value


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
    thresholds: Thresholds = {}
    default_threshold: float = Field(0.4, gt=0, lt=1)
    reject_output: RejectOutput | None = None
    burst: BurstConfig | None = None  # None: the trigger's frame alone
    reject_timing: RejectTimingConfig | None = None  # None: the reject fires as soon as the result is known
    stop_line_output: OutputPin | None = None  # latched on by reject_timing.fail_action stop_line
    webhooks: Annotated[list[WebhookConfig], AfterValidator(_webhook_names_unique)] = []
    stall_s: float = Field(2.0, gt=0, le=3600)  # a part waiting this long for a result stops the heartbeat
    crops: CropConfig = CropConfig()
    queue_size: int = Field(64, ge=1, le=10000)


class StreamMotionConfig(Strict):
    """The stream line's motion gate, per camera: a still picture is not inferred."""

    threshold: int = Field(25, ge=1, le=255)
    min_area: float = Field(0.005, gt=0, lt=1)
    lighting_limit: float = Field(0.8, gt=0, le=1)
    scale_height: int = Field(120, ge=16, le=2160)
    background_alpha: float = Field(0.05, gt=0, le=1)
    # None: inferred only on motion. A number: looked at this often anyway, so an object that
    # stopped moving (a parked car, someone loitering) is still seen and tracked.
    still_interval_s: float | None = Field(5.0, gt=0, le=3600)


class StreamLine(Strict):
    """Continuous detection on live cameras (surveillance): see README "Stream lines"."""

    type: Literal["stream"]
    cameras: list[str] = Field(min_length=1, max_length=64)
    model: str
    # Optional second stage for some labels, e.g. vehicle -> car / van / truck / bus.
    classifier: str | None = None
    classify_labels: list[str] | None = None  # None: every detection goes to the classifier
    thresholds: Thresholds = {}  # per label; others use default_threshold
    default_threshold: float = Field(0.4, gt=0, lt=1)
    max_fps: float = Field(5.0, gt=0, le=240)  # per camera, frames offered to the detector
    motion: StreamMotionConfig | None = StreamMotionConfig()  # None: every frame up to max_fps
    event_interval_s: float = Field(1.0, ge=0, le=3600)  # per camera, one detections event at most this often
    max_batch: int = Field(4, ge=1, le=64)  # frames of several cameras in one inference request
    queue_size: int = Field(16, ge=1, le=10000)
    stall_s: float = Field(5.0, gt=0, le=3600)
    crops: CropConfig = CropConfig()
    analytics: "StreamAnalyticsConfig | None" = None  # tracking, zones, tripwires, loitering

    @field_validator("cameras")
    @classmethod
    def _cameras_once(cls, value: list[str]):
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"camera {twice[0]!r} is listed twice")
        return value


CHECKOUT_RESULTS = ("ok", "no_read", "unknown_item", "weigh_separately", "no_weight", "weight_mismatch")


class CheckoutWebhookConfig(WebhookConfig):
    """A checkout line's webhook (the POS): `on` takes the basket results; default all of them,
    so the POS sees every basket, charges the `ok` ones and calls an attendant for the others."""

    on: list[Literal["ok", "no_read", "unknown_item", "weigh_separately", "no_weight", "weight_mismatch"]] = \
        list(CHECKOUT_RESULTS)


class CheckoutWeightConfig(Strict):
    """The weight check: |measured change - nominal weights| <= tolerance_g + tolerance_rel x the
    items sold per item + by_weight_tolerance_rel x the produce sold by weight."""

    tolerance_g: float = Field(10.0, ge=0, le=10000)
    tolerance_rel: float = Field(0.03, ge=0, le=1)
    by_weight_tolerance_rel: float = Field(0.35, ge=0, le=5)


class CheckoutLine(Strict):
    """Retail self-checkout: motion + weight -> detect -> classify -> price lookup (README "Checkout line")."""

    type: Literal["checkout"]
    camera: str
    trigger: TriggerConfig
    model: str  # the product detector
    classifier: str  # product identity from each box: its labels are the catalog's `label`s
    # The defaults are calibrated for the shipped checkout models (python -m hw_sim.checkout_eval,
    # renderer seed 25000); calibrate again for other models.
    thresholds: Thresholds = {}  # per detector label; others use default_threshold
    default_threshold: float = Field(0.25, gt=0, lt=1)
    min_probability: float = Field(0.8, gt=0, le=1)  # the classifier's top probability under this: unknown item
    # Two boxes named the same product, one with this share of its area inside the other: one product.
    max_box_overlap: float | None = Field(0.6, gt=0, le=1)
    # Boxes scoring from this up to the threshold count when the weight confirms them, and only
    # then (README "Checkout line"); null: never.
    unsure_from: float | None = Field(0.1, gt=0, lt=1)
    weight: CheckoutWeightConfig = CheckoutWeightConfig()
    burst: BurstConfig | None = None
    webhooks: Annotated[list[CheckoutWebhookConfig], AfterValidator(_webhook_names_unique)] = []
    stall_s: float = Field(2.0, gt=0, le=3600)
    crops: CropConfig = CropConfig()
    queue_size: int = Field(16, ge=1, le=10000)


class CatalogConfig(Strict):
    """The factory product database (SQLite, agent/catalog.py): used while no sync bundle brings one."""

    path: Path


def _line_type(value) -> str:
    """Lines without a `type` are inspection lines (the first kind, and the configs written before)."""
    if isinstance(value, dict):
        return value.get("type", "inspection")
    return getattr(value, "type", "inspection")


LineConfig = Annotated[
    Union[Annotated[InspectionLine, Tag("inspection")], Annotated[StreamLine, Tag("stream")],
          Annotated[CheckoutLine, Tag("checkout")]],
    Discriminator(_line_type),
]


class ControlConfig(Strict):
    """Commands over MQTT on {prefix}/{device}/cmd/... (see README "Commands")."""

    enabled: bool = True
    # Provisioned devices set this: every command must carry an Ed25519 signature by one of public_keys.
    require_signature: bool = False
    public_keys: list[Path] = []  # PEM or raw base64 Ed25519 public keys of the operators
    max_validity_s: float = Field(300.0, gt=0, le=7 * 86400)  # longest expires_at - issued_at accepted
    clock_skew_s: float = Field(30.0, ge=0, le=3600)  # issued_at may be this far in our future
    # None: beside the outbox file (the device's state directory).
    replay_db: Path | None = None  # seen cmd_ids, kept for their validity
    audit_log: Path | None = None  # one JSON line per command
    audit_max_bytes: int = Field(10 * 1024**2, ge=4096)  # then rotated to audit.log.1
    max_payload_bytes: int = Field(65536, ge=256, le=16 * 1024**2)
    queue_size: int = Field(64, ge=1, le=10000)  # commands waiting for the handler; more are refused "busy"


# -- sync (issue 8): nightly bundles of models and the product database ------------------------

class GoldenCheckConfig(Strict):
    """How closely a staged model must reproduce the bundle's golden results."""

    min_iou: float = Field(0.85, gt=0, le=1)
    score_tolerance: float = Field(0.05, ge=0, lt=1)
    latency_budget_ms: float = Field(250.0, gt=0, le=60000)  # median detect time per golden image


class TrialConfig(Strict):
    """After a switch: what reverts the new version by itself during duration_s."""

    duration_s: float = Field(600.0, ge=0, le=7 * 86400)
    crash_limit: int = Field(1, ge=1, le=100)  # unclean agent restarts during the trial
    max_inference_errors: int = Field(0, ge=0)
    max_backlog: int = Field(8, ge=1, le=100000)  # frames waiting for inference, two checks in a row
    max_slowdown: float = Field(3.0, gt=1, le=1000)  # median inference time against the old model's


class SyncConfig(Strict):
    """Signed bundles from manifest_url (README "Sync"). Absent: the factory models only."""

    manifest_url: str = Field(pattern=r"^https?://")
    public_keys: list[Path] = Field(min_length=1)  # Ed25519 bundle-signing keys, PEM or base64 (provisioning)
    ca_bundle: Path | None = None  # the CA of the update server; None: the system's CAs
    window: str | None = "02:00-04:00"  # local time; the sync runs at a random moment in it. None: on command only
    retry_s: float = Field(600.0, ge=1, le=86400)  # after a network failure, inside the window
    state_dir: Path | None = None  # None: bundles/ beside the outbox file
    timeout_s: float = Field(1800.0, ge=10, le=86400)  # one whole sync
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(30.0, gt=0, le=600)
    retries: int = Field(4, ge=0, le=100)  # per file
    max_manifest_bytes: int = Field(1024**2, ge=1024)
    max_artefact_bytes: int = Field(512 * 1024**2, ge=1024)
    max_bundle_bytes: int = Field(2 * 1024**3, ge=1024)
    golden: GoldenCheckConfig = GoldenCheckConfig()
    trial: TrialConfig = TrialConfig()

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None):
        if value is not None:
            from ..sync.schedule import parse_window

            parse_window(value)
        return value


class AgentConfig(Strict):
    device: DeviceConfig
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Compiled-model cache (OpenVINO CACHE_DIR): restarts skip recompiling. None: no cache.
    model_cache_dir: Path | None = None
    mqtt: MqttConfig
    outbox: OutboxConfig = OutboxConfig()
    plc: PlcConfig | None = None  # None: no PLC (e.g. a surveillance box); no heartbeat
    gpio: GpioConfig = GpioConfig()
    models: dict[str, ModelConfig]
    catalog: CatalogConfig | None = None  # the factory product database; checkout lines need it
    cameras: dict[str, CameraConfig]
    lines: dict[str, LineConfig]
    control: ControlConfig = ControlConfig()
    sync: SyncConfig | None = None

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
        if self.control.enabled and self.control.require_signature and not self.control.public_keys:
            issues.append((("control", "public_keys"), "require_signature needs at least one public key file"))
        issues += self._camera_sharing_issues()
        for name, line in self.lines.items():
            if line.type == "stream":
                issues += self._stream_line_issues(name, line)
                continue
            for path, trigger in walk_triggers(line.trigger, ("lines", name, "trigger")):
                if trigger.type == "plc" and self.plc is None:
                    issues.append((path, "a plc trigger needs the plc section (the PLC's address)"))
                motion_camera = getattr(trigger, "camera", None)
                if trigger.type == "motion" and motion_camera is not None and motion_camera not in self.cameras:
                    known = ", ".join(self.cameras) or "none"
                    issues.append(((*path, "camera"), f"no camera named {motion_camera!r} (cameras: {known})"))
            if line.camera not in self.cameras:
                known = ", ".join(self.cameras) or "none"
                issues.append((("lines", name, "camera"), f"no camera named {line.camera!r} (cameras: {known})"))
            if line.type == "checkout":
                issues += self._checkout_line_issues(name, line)
                continue
            for key in ("model", "severity_model"):
                ref = getattr(line, key)
                if ref is not None and ref not in self.models:
                    known = ", ".join(self.models) or "none"
                    issues.append((("lines", name, key), f"no model named {ref!r} (models: {known})"))
            timing = line.reject_timing
            if timing is not None and timing.mode == "encoder" and self.plc is None:
                issues.append((("lines", name, "reject_timing", "mode"), "encoder timing reads the PLC: add the plc section"))
            if timing is not None and timing.fail_action == "stop_line" and line.stop_line_output is None:
                issues.append((("lines", name, "stop_line_output"), "fail_action stop_line needs a stop_line_output pin"))
            if line.reject_severities is not None and line.severity_model is None:
                issues.append((("lines", name, "reject_severities"), "needs a severity_model to grade defects"))
        return issues

    def _model_issue(self, path: tuple, ref: str | None) -> list:
        if ref is None or ref in self.models:
            return []
        return [(path, f"no model named {ref!r} (models: {', '.join(self.models) or 'none'})")]

    def _checkout_line_issues(self, name: str, line: CheckoutLine) -> list:
        issues = self._model_issue(("lines", name, "model"), line.model)
        issues += self._model_issue(("lines", name, "classifier"), line.classifier)
        if self.catalog is None:
            issues.append((("lines", name), "a checkout line needs the factory product database: add catalog.path "
                                            "(build one with: edge-agent catalog build)"))
        scales = [(path, t) for path, t in walk_triggers(line.trigger, ("lines", name, "trigger")) if t.type == "scale"]
        if not scales:
            issues.append((("lines", name, "trigger"), "a checkout line needs a scale trigger (e.g. all_of motion and "
                                                       "scale): the weight change is what its baskets are checked against"))
        for path, scale in scales:
            if scale.direction != "increase":
                issues.append(((*path, "direction"), "a checkout line charges what is put down: use direction increase"))
        return issues

    def _stream_line_issues(self, name: str, line: StreamLine) -> list:
        issues = []
        for i, camera in enumerate(line.cameras):
            cam = self.cameras.get(camera)
            if cam is None:
                issues.append((("lines", name, "cameras", i), f"no camera named {camera!r} (cameras: {', '.join(self.cameras) or 'none'})"))
            elif cam.type == "http_snapshot":
                issues.append((("lines", name, "cameras", i), f"camera {camera!r} is an http_snapshot camera: a stream line "
                               "needs a live one (stream, v4l2, file or folder)"))
        issues += self._model_issue(("lines", name, "model"), line.model)
        issues += self._model_issue(("lines", name, "classifier"), line.classifier)
        if line.classify_labels is not None and line.classifier is None:
            issues.append((("lines", name, "classify_labels"), "needs a classifier"))
        if line.analytics is not None:
            issues += [(("lines", name, "analytics", *path), message)
                       for path, message in line.analytics.reference_issues(line.cameras)]
        return issues

    def _camera_sharing_issues(self) -> list:
        """A stream line reads every frame of its cameras: nothing else may read them frame by frame."""
        readers: dict[str, list[str]] = {}
        for name, line in self.lines.items():
            if line.type == "stream":
                for camera in line.cameras:
                    readers.setdefault(camera, []).append(f"line {name}")
                continue
            for _, trigger in walk_triggers(line.trigger, ("lines", name, "trigger")):
                if trigger.type == "motion":
                    readers.setdefault(trigger.camera or line.camera, []).append(f"the motion trigger of line {name}")
        issues = []
        for name, line in self.lines.items():
            if line.type != "stream":
                continue
            for i, camera in enumerate(line.cameras):
                others = [r for r in readers.get(camera, []) if r != f"line {name}"]
                others += [f"line {n}" for n, other in self.lines.items() if other.type != "stream" and other.camera == camera]
                if others:
                    issues.append((("lines", name, "cameras", i),
                                   f"camera {camera!r} is also read by {', '.join(others)}: a stream line needs its cameras to itself"))
        return issues


from .analytics import StreamAnalyticsConfig  # noqa: E402  (it builds on Strict and the postprocess settings)

StreamLine.model_rebuild()
AgentConfig.model_rebuild()
