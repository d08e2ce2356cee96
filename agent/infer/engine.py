"""OpenVINO runtime adapter: the only module that imports openvino.

A detector takes a u8 BGR HWC frame of any size. The letterbox happens here with cv2; colour
order, layout and scaling to [0, 1] run inside the compiled graph (PrePostProcessor).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..events import Detection
from .geometry import letterbox
from .nms import decode_yolov8

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    xml: Path
    names: dict[int, str]
    input_size: tuple[int, int]  # height, width
    sha256: str | None = None


def _find_ir(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            found = ", ".join(p.name for p in xmls) or "none"
            raise ModelLoadError(f"{path}: expected exactly one OpenVINO .xml model in the folder, found {found}")
        xml = xmls[0]
    elif path.suffix == ".xml":
        xml = path
    else:
        raise ModelLoadError(f"{path}: not an OpenVINO IR (.xml + .bin) file or folder")
    if not xml.is_file():
        raise ModelLoadError(f"model file not found: {xml}")
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise ModelLoadError(f"model weights not found: {weights} (an IR needs the .bin beside its .xml)")
    return xml, weights


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


class Detector:
    """A YOLOv8-layout detector ([1, 4+classes, anchors] output) on OpenVINO."""

    def __init__(
        self,
        path: Path,
        device: str = "CPU",
        performance_hint: str = "LATENCY",
        cache_dir: Path | None = None,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ):
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"model not found: {path}")
        xml, _ = _find_ir(path)
        meta = _read_metadata(xml.parent)
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ModelLoadError(f"{xml}: not a readable OpenVINO model ({first_line})") from None

        if len(model.inputs) != 1:
            raise ModelLoadError(f"{xml}: expected one image input, found {len(model.inputs)}")
        shape = model.input(0).partial_shape
        if shape.rank.get_length() != 4 or shape[2].is_dynamic or shape[3].is_dynamic:
            size = meta.get("imgsz")
            if not size:
                raise ModelLoadError(f"{xml}: input shape {shape} is dynamic and metadata.yaml gives no imgsz")
            height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
            model.reshape({model.input(0): [1, 3, height, width]})
        else:
            height, width = shape[2].get_length(), shape[3].get_length()

        out_shape = model.output(0).partial_shape
        names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
        if out_shape.rank.get_length() != 3 or out_shape[1].is_dynamic or out_shape[1].get_length() < 5:
            raise ModelLoadError(
                f"{xml}: output shapes {[str(o.partial_shape) for o in model.outputs]} match no adapter "
                "(tried: yolov8 detect [1, 4+classes, anchors])"
            )
        classes = out_shape[1].get_length() - 4
        if names and len(names) != classes:
            raise ModelLoadError(f"{xml}: metadata.yaml names {len(names)} classes but the model outputs {classes}")
        self.info = ModelInfo(xml=xml, names=names or {i: str(i) for i in range(classes)}, input_size=(height, width))

        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        model = ppp.build()

        config = {"PERFORMANCE_HINT": performance_hint}
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        try:
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise ModelLoadError(f"{xml}: cannot compile for device {device}: {str(exc).strip().splitlines()[0]}") from None
        self._request = self._compiled.create_infer_request()
        self._iou = iou_threshold
        self._max = max_detections
        self.last_infer_ms = 0.0

    @property
    def labels(self) -> dict[int, str]:
        return self.info.names

    def detect(self, image: np.ndarray, conf_threshold: float) -> list[Detection]:
        """Detections in source-frame pixels. Not thread-safe: one Detector per worker thread."""
        image = _as_bgr(image)
        height, width = image.shape[:2]
        tensor, box = letterbox(image, self.info.input_size)
        start = time.perf_counter()
        self._request.infer({0: tensor[None]})
        self.last_infer_ms = (time.perf_counter() - start) * 1000
        output = self._request.get_output_tensor(0).data
        boxes, scores, class_ids = decode_yolov8(output, conf_threshold, self._iou, self._max)
        boxes = box.to_source(boxes, width, height)
        return [
            Detection(int(c), self.labels.get(int(c), str(int(c))), float(s), tuple(float(v) for v in b))
            for b, s, c in zip(boxes, scores, class_ids)
        ]


class BadFrame(ValueError):
    """A frame that cannot be turned into a 3-channel u8 image."""


def _as_bgr(image: np.ndarray) -> np.ndarray:
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise BadFrame(f"not an image: {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        raise BadFrame(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    raise BadFrame(f"expected 1, 3 or 4 channels, got {channels}")
