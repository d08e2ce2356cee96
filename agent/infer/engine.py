"""OpenVINO runtime adapter: the only module that imports openvino.

A model takes u8 BGR HWC frames of any size. Letterbox padding, colour order, layout and
scaling run inside the compiled graph (PrePostProcessor), compiled once per source resolution
and batch size; CACHE_DIR makes recompiles after a restart fast.

The resize itself runs where it is cheapest (`resize`): on a CPU device, cv2 on the host
(about 0.05 ms for 640x480 -> 320x240, against about 0.6 ms of CPU for OpenVINO's in-graph
Interpolate, which halved pipeline throughput on small models); on GPU and NPU devices, in the
graph, where it runs on the accelerator. Both give the same letterbox geometry.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..events import Detection
from .adapters import ADAPTER_SHAPES, INPUT_SPECS, InputSpec, choose_adapter, decode_ssd, to_probabilities, top_k
from .geometry import Letterbox
from .nms import decode_yolov8

log = logging.getLogger(__name__)

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
HINTS = ("LATENCY", "THROUGHPUT")
RESIZE_MODES = ("auto", "graph", "host")
PRECISIONS = ("auto", "f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT; auto: the device default
_MAX_COMPILED = 4  # distinct (resolution, batch) variants kept per model


class ModelLoadError(Exception):
    """The model cannot be used; the message names the file and what is wrong."""


class BadFrame(ValueError):
    """A frame that cannot be turned into a 3-channel u8 image."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path  # the .xml or .onnx file
    adapter: str
    names: dict[int, str]
    input_size: tuple[int, int]  # height, width
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    metadata: dict

    def sha256(self) -> str:
        digest = hashlib.sha256(self.path.read_bytes())
        weights = self.path.with_suffix(".bin")
        if weights.is_file():
            digest.update(weights.read_bytes())
        return digest.hexdigest()


def _find_model_file(path: Path) -> Path:
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    if path.is_dir():
        candidates = sorted(path.glob("*.xml")) or sorted(path.glob("*.onnx"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise ModelLoadError(f"{path}: expected exactly one .xml (or .onnx) model in the folder, found {found}")
        path = candidates[0]
    if path.suffix == ".xml":
        if not path.with_suffix(".bin").is_file():
            raise ModelLoadError(f"model weights not found: {path.with_suffix('.bin')} (an IR needs its .bin beside the .xml)")
    elif path.suffix != ".onnx":
        raise ModelLoadError(f"{path}: not an OpenVINO IR (.xml + .bin) or ONNX (.onnx) model")
    return path


def _read_metadata(folder: Path) -> dict:
    meta_path = folder / "metadata.yaml"
    if not meta_path.is_file():
        return {}
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{meta_path}: cannot read model metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path}: model metadata must be a mapping")
    return meta


def _reason(exc: Exception) -> str:
    """The informative line of an OpenVINO exception (they start with a source location)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1][:300]


def _check_ir_xml(xml: Path) -> None:
    """A truncated or foreign .xml would make OpenVINO try every frontend; say what it is instead."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(xml).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise ModelLoadError(f"{xml}: not a valid OpenVINO IR, the XML is truncated or corrupt ({exc})") from None
    if root.tag != "net":
        raise ModelLoadError(f"{xml}: not an OpenVINO IR (root element <{root.tag}>, expected <net>)")


def cpu_precisions() -> tuple[list[str], str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (e.g. FP32, INT8, BF16) and the precision it runs
    layers that are not quantised in by default ("f32", or "bf16" on AVX-512 BF16 / AMX)."""
    import openvino as ov

    core = ov.Core()
    default = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")), default


class Model:
    """One model file on one device. Reads and checks it at once; compiles on demand."""

    def __init__(self, path: str | Path, device: str = "CPU", performance_hint: str = "LATENCY",
                 cache_dir: Path | None = None, adapter: str = "auto", resize: str = "auto",
                 precision: str = "auto"):
        """resize: "graph" (OpenVINO resizes inside the compiled model), "host" (cv2 resizes the
        u8 frame before inference), "auto" (host on CPU, graph on accelerators).

        precision: what the layers that are not quantised run in. "auto" is the device's choice:
        on a CPU with AVX-512 BF16 or AMX, OpenVINO runs an FP32 IR in bf16. "f32" keeps FP32."""
        import openvino as ov

        if device not in DEVICES and not device.startswith(("AUTO:", "HETERO:", "MULTI:", "GPU.")):
            raise ModelLoadError(f"unknown inference device {device!r} (use one of {', '.join(DEVICES)})")
        if performance_hint not in HINTS:
            raise ModelLoadError(f"unknown performance hint {performance_hint!r} (use LATENCY or THROUGHPUT)")
        if resize not in RESIZE_MODES:
            raise ModelLoadError(f"unknown resize mode {resize!r} (use one of {', '.join(RESIZE_MODES)})")
        if precision not in PRECISIONS:
            raise ModelLoadError(f"unknown inference precision {precision!r} (use one of {', '.join(PRECISIONS)})")
        self.host_resize = resize == "host" or (resize == "auto" and device == "CPU")
        self._ov = ov
        self._core = ov.Core()
        self.file = _find_model_file(Path(path))
        self.device = device
        self.hint = performance_hint
        self._config: dict = {"PERFORMANCE_HINT": performance_hint}
        if precision != "auto":
            self._config["INFERENCE_PRECISION_HINT"] = precision
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self._config["CACHE_DIR"] = str(cache_dir)
        meta = _read_metadata(self.file.parent)
        model = self._read()
        if len(model.inputs) != 1:
            raise ModelLoadError(f"{self.file}: expected one image input, found {len(model.inputs)}")
        self._layout, (height, width) = self._input_layout(model, meta)
        if model.input(0).partial_shape.is_dynamic:
            model.reshape({model.input(0): self._shape(1, height, width)})
        out_shapes = [list(o.get_shape()) if not o.partial_shape.is_dynamic else [str(d) for d in o.partial_shape]
                      for o in model.outputs]
        chosen = choose_adapter(out_shapes, meta.get("task")) if adapter == "auto" else adapter
        if chosen not in ADAPTER_SHAPES:
            tried = ", ".join(f"{name} {shape}" for name, shape in ADAPTER_SHAPES.items())
            raise ModelLoadError(f"{self.file}: output shapes {out_shapes} match no adapter (tried: {tried})")
        classes = {"yolov8": lambda s: s[1] - 4, "ssd": lambda s: None, "classifier": lambda s: s[1]}[chosen](out_shapes[0])
        names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
        if isinstance(meta.get("names"), list):
            names = dict(enumerate(map(str, meta["names"])))
        if names and classes is not None and len(names) != classes:
            raise ModelLoadError(f"{self.file}: metadata.yaml names {len(names)} classes but the model outputs {classes}")
        if not names and classes is not None:
            names = {i: str(i) for i in range(classes)}
        self.info = ModelInfo(
            path=self.file, adapter=chosen, names=names, input_size=(height, width),
            inputs=tuple(f"{i.get_any_name()}: {i.get_element_type().get_type_name()} {i.partial_shape}" for i in model.inputs),
            outputs=tuple(f"{o.get_any_name() if o.get_names() else '?'}: {o.get_element_type().get_type_name()} "
                          f"{o.partial_shape}" for o in model.outputs),
            metadata=meta,
        )
        self.spec: InputSpec = INPUT_SPECS[chosen]
        self._compiled: OrderedDict = OrderedDict()
        self._compiling: dict[tuple, threading.Event] = {}  # variants being compiled, set when done
        self._lock = threading.Lock()
        self._letterboxes: dict[tuple[int, int], Letterbox] = {}

    def _read(self):
        if self.file.suffix == ".xml":
            _check_ir_xml(self.file)
        try:
            return self._core.read_model(str(self.file))
        except RuntimeError as exc:
            raise ModelLoadError(f"{self.file}: not a readable model ({_reason(exc)})") from None

    def _input_layout(self, model, meta: dict) -> tuple[str, tuple[int, int]]:
        shape = model.input(0).partial_shape
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ModelLoadError(f"{self.file}: expected a 4-D image input, found {shape}")
        dims = [d.get_length() if d.is_static else None for d in shape]
        layout = "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"
        spatial = dims[1:3] if layout == "NHWC" else dims[2:4]
        if None in spatial:
            size = meta.get("imgsz")
            if not size:
                raise ModelLoadError(f"{self.file}: input shape {shape} is dynamic and metadata.yaml gives no imgsz")
            spatial = [size, size] if isinstance(size, int) else [int(size[0]), int(size[1])]
        return layout, (int(spatial[0]), int(spatial[1]))

    def _shape(self, batch: int, height: int, width: int) -> list[int]:
        return [batch, height, width, 3] if self._layout == "NHWC" else [batch, 3, height, width]

    def letterbox_for(self, source_hw: tuple[int, int]) -> Letterbox:
        key = tuple(source_hw)
        box = self._letterboxes.get(key)
        if box is None:  # per frame on the hot path: computed once per source size
            box = self._letterboxes[key] = Letterbox.fit(key, self.info.input_size)
        return box

    def resized_hw(self, source_hw: tuple[int, int]) -> tuple[int, int]:
        """The size a source frame is scaled to before padding (the model input for "stretch")."""
        if self.spec.resize == "letterbox":
            box = self.letterbox_for(source_hw)
            return box.new_h, box.new_w
        return self.info.input_size

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """The array to feed the model compiled for this frame's size: the frame itself, or,
        with host resizing, the frame scaled by cv2 (INTER_LINEAR, as the graph would)."""
        if not self.host_resize:
            return frame
        height, width = self.resized_hw(frame.shape[:2])
        if (height, width) == frame.shape[:2]:
            return frame
        import cv2

        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)

    def fill(self, request, frames: list[np.ndarray]) -> None:
        """Write `frames` (one size), prepared, straight into an idle request of the model compiled
        for their size: no array in between, and OpenVINO copies nothing when it starts."""
        data = request.get_input_tensor(0).data  # [batch, h, w, 3] u8, the request's own memory
        if data.shape[0] != len(frames):
            raise ValueError(f"{len(frames)} frames for a request of batch {data.shape[0]}")
        height, width = data.shape[1:3]
        import cv2

        for slot, frame in zip(data, frames):
            if not self.host_resize or (height, width) == frame.shape[:2]:
                np.copyto(slot, frame)
            else:
                cv2.resize(frame, (width, height), dst=slot, interpolation=cv2.INTER_LINEAR)

    def compiled(self, source_hw: tuple[int, int], batch: int = 1):
        """The compiled model for frames of source_hw, fed through `fill` (or `prepare`), [batch, h, w, 3]
        u8 BGR; batch 0 means a dynamic batch."""
        key = (tuple(source_hw), batch)
        while True:
            with self._lock:
                if key in self._compiled:
                    self._compiled.move_to_end(key)
                    return self._compiled[key]
                compiling = self._compiling.get(key)
                if compiling is None:  # this thread compiles it; others wanting it wait for that
                    compiling = self._compiling[key] = threading.Event()
                    break
            compiling.wait()  # then the variant is cached, or that compile failed and we try
        try:
            compiled = self._compile(source_hw, batch)  # outside the lock: other variants stay usable
            with self._lock:
                self._compiled[key] = compiled
                if len(self._compiled) > _MAX_COMPILED:
                    self._compiled.popitem(last=False)
            return compiled
        finally:
            with self._lock:
                del self._compiling[key]
            compiling.set()

    def ready(self, source_hw: tuple[int, int], batch: int) -> bool:
        """Whether this variant is compiled. If not, it starts compiling on a thread of its own
        (once), so a caller that must not wait a second can use another variant meanwhile."""
        key = (tuple(source_hw), batch)
        with self._lock:
            if key in self._compiled:
                return True
            if key in self._compiling:
                return False

        def compile_() -> None:
            try:
                self.compiled(source_hw, batch)
            except ModelLoadError as exc:
                log.error("compiling %s for batch %d in the background failed: %s", self.file.name, batch, exc)

        threading.Thread(target=compile_, name=f"compile-{self.file.stem}-b{batch}", daemon=True).start()
        return False

    def _compile(self, source_hw: tuple[int, int], batch: int):
        ov = self._ov
        from openvino.preprocess import ColorFormat, PaddingMode, PrePostProcessor, ResizeAlgorithm

        model = self._read()
        height, width = self.info.input_size
        model.reshape({model.input(0): self._shape(batch if batch > 0 else -1, height, width)})
        ppp = PrePostProcessor(model)
        fed_h, fed_w = self.resized_hw(source_hw) if self.host_resize else source_hw
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR).set_shape([batch if batch > 0 else -1, fed_h, fed_w, 3])
        ppp.input().model().set_layout(ov.Layout(self._layout))
        steps = ppp.input().preprocess()
        scaled_h, scaled_w = self.resized_hw(source_hw)
        if (scaled_h, scaled_w) != (fed_h, fed_w):  # in-graph resize
            steps.resize(ResizeAlgorithm.RESIZE_LINEAR, scaled_h, scaled_w)
        steps.convert_element_type(ov.Type.f32)
        if self.spec.resize == "letterbox" and (scaled_h, scaled_w) != (height, width):
            box = self.letterbox_for(source_hw)
            steps.pad([0, box.pad_y, box.pad_x, 0], [0, box.pad_bottom, box.pad_right, 0],
                      self.spec.pad_value, PaddingMode.CONSTANT)
        if self.spec.rgb:
            steps.convert_color(ColorFormat.RGB)
        if self.spec.scale:
            steps.scale(self.spec.scale)
        for i in range(len(model.outputs)):
            ppp.output(i).tensor().set_element_type(ov.Type.f32)
        started = time.monotonic()
        try:
            compiled = self._core.compile_model(ppp.build(), self.device, self._config)
        except RuntimeError as exc:
            raise ModelLoadError(f"{self.file}: cannot compile for {self.device}: {_reason(exc)}") from None
        where = "host" if self.host_resize else "graph"
        log.info("compiled %s for %dx%d x%s on %s (%s, resize on the %s) in %.0f ms", self.file.name, source_hw[1],
                 source_hw[0], batch or "N", self.device, self.hint, where, (time.monotonic() - started) * 1000)
        return compiled

    def optimal_requests(self, source_hw: tuple[int, int], batch: int = 1) -> int:
        return int(self.compiled(source_hw, batch).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel u8 frame: grey and BGRA are converted; anything else is a BadFrame."""
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise BadFrame(f"not an image: {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        raise BadFrame(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 3:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise BadFrame(f"expected 1, 3 or 4 channels, got {image.shape[2]}")


class Detector:
    """Detections in source-frame pixels from a yolov8 or ssd model.

    Synchronous: one infer request per source size, not thread-safe (one Detector per worker).
    """

    def __init__(self, path: str | Path | Model, device: str = "CPU", performance_hint: str = "LATENCY",
                 cache_dir: Path | None = None, iou_threshold: float = 0.5, max_detections: int = 100):
        self.model = path if isinstance(path, Model) else Model(path, device, performance_hint, cache_dir)
        if self.model.info.adapter not in ("yolov8", "ssd"):
            raise ModelLoadError(f"{self.model.file}: a {self.model.info.adapter} model cannot be used as a detector")
        self.info = self.model.info
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self._requests: dict = {}
        self.last_infer_ms = 0.0

    @property
    def labels(self) -> dict[int, str]:
        return self.info.names

    def _request(self, source_hw: tuple[int, int], batch: int):
        key = (source_hw, batch)
        if key not in self._requests:
            self._requests[key] = self.model.compiled(source_hw, batch).create_infer_request()
        return self._requests[key]

    def detect(self, image: np.ndarray, conf_threshold: float) -> list[Detection]:
        return self.detect_batch([image], conf_threshold)[0]

    def detect_batch(self, images: list[np.ndarray], conf_threshold: float) -> list[list[Detection]]:
        """Frames of one size run as one batch; mixed sizes run one batch per size."""
        frames = [as_bgr(image) for image in images]
        results: list[list[Detection] | None] = [None] * len(frames)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            by_size.setdefault(frame.shape[:2], []).append(i)
        infer_ms = 0.0
        for size, indices in by_size.items():
            request = self._request(size, len(indices))
            self.model.fill(request, [frames[i] for i in indices])
            started = time.perf_counter()
            request.infer()
            infer_ms += (time.perf_counter() - started) * 1000
            output = request.get_output_tensor(0).data
            for row, i in enumerate(indices):
                results[i] = self.decode(output[row : row + 1], size, conf_threshold)
        self.last_infer_ms = infer_ms
        return results  # type: ignore[return-value]

    def decode(self, output: np.ndarray, source_hw: tuple[int, int], conf_threshold: float) -> list[Detection]:
        height, width = source_hw
        if self.info.adapter == "yolov8":
            boxes, scores, class_ids = decode_yolov8(output, conf_threshold, self.iou_threshold, self.max_detections)
            boxes = self.model.letterbox_for(source_hw).to_source(boxes, width, height)
        else:
            boxes, scores, class_ids = decode_ssd(output, conf_threshold, self.max_detections)
            boxes = boxes * np.array([width, height, width, height], np.float32)
        labels = self.labels
        return [Detection(c, labels.get(c) or str(c), s, tuple(b))
                for b, s, c in zip(boxes.tolist(), scores.tolist(), class_ids.tolist())]


class AsyncDetector:
    """Pipelined detection for streams (THROUGHPUT hint): several requests in flight at once.

    Results are decoded on the caller's thread, in the order the frames were submitted, by
    calling `on_result(detections_per_frame, userdata)`: `submit` delivers the oldest results
    when it needs their request (it blocks only while every request for this frame size is
    busy), `collect()` delivers what has finished without blocking, and `wait_all()` waits for
    and delivers everything.
    No Python runs on OpenVINO's threads except `on_ready` (no arguments, when a request
    finishes; for waking a thread that waits to collect: keep it to a notify). Decoding in
    OpenVINO's completion callback held an inference stream on the GIL for every frame, which
    cost about 3% of throughput on 2 cores.
    """

    def __init__(self, detector: Detector, conf_threshold: float,
                 on_result: Callable[[list[list[Detection]], object], None], jobs: int = 0,
                 on_ready: Callable[[], None] | None = None):
        """jobs: requests per frame size and batch; 0: twice the device's optimal number, so the
        host side (preprocess, decode, NMS) of one overlaps the inference of the others."""
        self._detector = detector
        self.conf_threshold = conf_threshold  # may be changed while running: the next results use it
        self._on_result = on_result
        self._on_ready = on_ready
        self._jobs = jobs
        self._idle: dict[tuple, list] = {}  # (size, batch) -> requests ready for new input
        self._made: dict[tuple, int] = {}
        self._limits: dict[tuple, int] = {}  # requests per key (a property query costs a stall: once)
        self._in_flight: deque = deque()  # (request, key, userdata), oldest first
        self._lock = threading.Lock()  # one collector at a time: results in order, each once
        self.errors = 0

    def submit(self, frames: list[np.ndarray], userdata: object = None) -> None:
        """Frames must share one size."""
        frames = [as_bgr(f) for f in frames]
        size, batch = frames[0].shape[:2], len(frames)
        if any(f.shape[:2] != size for f in frames):
            raise BadFrame("frames in one batch must have the same size")
        key = (size, batch)
        with self._lock:
            request = self._free_request(key)
            self._detector.model.fill(request, frames)
            request.start_async()
            self._in_flight.append((request, key, userdata))

    def ready(self, source_hw: tuple[int, int], batch: int) -> bool:
        """Whether frames of this size can go as one batch now without waiting for a compile
        (see Model.ready: a missing variant starts compiling in the background). Requests made
        already keep their compiled model: a variant the model's cache let go is still ready here."""
        return self._made.get((tuple(source_hw), batch), 0) > 0 or self._detector.model.ready(source_hw, batch)

    def finished(self) -> bool:
        """Whether the oldest request in flight has finished (its results are waiting for
        `collect`). Takes no lock: safe to call while holding the caller's own."""
        try:
            request = self._in_flight[0][0]
        except IndexError:
            return False
        return request.wait_for(0)

    def collect(self) -> int:
        """Deliver the results that are ready, oldest first, without blocking; how many."""
        with self._lock:
            return self._deliver_finished(block=False)

    def wait_all(self) -> None:
        with self._lock:
            self._deliver_finished(block=True)

    def _free_request(self, key: tuple):
        idle = self._idle.setdefault(key, [])
        if not idle:
            if key not in self._limits:
                self._limits[key] = self._jobs or 2 * self._detector.model.optimal_requests(*key)
            if self._made.get(key, 0) < self._limits[key]:
                request = self._detector.model.compiled(*key).create_infer_request()
                if self._on_ready is not None:
                    request.set_callback(lambda _userdata: self._on_ready(), None)
                self._made[key] = self._made.get(key, 0) + 1
                return request
            while not idle:  # every request of this size is busy: deliver the oldest
                self._deliver_one()
        return idle.pop()

    def _deliver_finished(self, block: bool) -> int:
        delivered = 0
        while self._in_flight and (block or self._in_flight[0][0].wait_for(0)):
            self._deliver_one()
            delivered += 1
        return delivered

    def _deliver_one(self) -> None:
        request, key, userdata = self._in_flight.popleft()
        (height, width), batch = key
        try:
            request.wait()
            output = request.get_output_tensor(0).data
            detections = [self._detector.decode(output[i : i + 1], (height, width), self.conf_threshold)
                          for i in range(batch)]
        except Exception:  # one failed request must not stop the stream
            self.errors += 1
            log.exception("an async inference or its decoding failed")
            return
        finally:
            self._idle[key].append(request)
        self._on_result(detections, userdata)


class Classifier:
    """Top-k labels for image crops, batched (crops are resized to the input with cv2)."""

    def __init__(self, path: str | Path | Model, device: str = "CPU", performance_hint: str = "LATENCY",
                 cache_dir: Path | None = None):
        self.model = path if isinstance(path, Model) else Model(path, device, performance_hint, cache_dir)
        if self.model.info.adapter != "classifier":
            raise ModelLoadError(f"{self.model.file}: a {self.model.info.adapter} model cannot be used as a classifier")
        self.info = self.model.info
        self._request = None
        self.last_infer_ms = 0.0

    def classify(self, crops: list[np.ndarray], k: int = 1) -> list[list[tuple[str, float]]]:
        import cv2

        if not crops:
            return []
        height, width = self.info.input_size
        batch = np.stack([cv2.resize(as_bgr(c), (width, height), interpolation=cv2.INTER_LINEAR) for c in crops])
        if self._request is None:
            self._request = self.model.compiled((height, width), batch=0).create_infer_request()
        started = time.perf_counter()
        self._request.infer({0: batch})
        self.last_infer_ms = (time.perf_counter() - started) * 1000
        probabilities = to_probabilities(self._request.get_output_tensor(0).data.copy())
        names = self.info.names
        return [[(names.get(c, str(c)), p) for c, p in row] for row in top_k(probabilities, k)]
