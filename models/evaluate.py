"""Evaluate a YOLOv8-layout detector IR on held-out simulator renders.

Holds the small numpy pieces a detector needs around the IR (letterbox, decode,
NMS) and a COCO-style mAP. The model build and the accuracy test both use it, so
the numbers on the model card are the numbers the test checks.

The IR's single output is [1, 4 + nc, N]: rows 0..3 are box centre-x, centre-y,
width and height in model-input pixels, rows 4.. are class scores after sigmoid.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hw_sim.scene import DEFECT_KINDS, PartRenderer, RenderedPart  # noqa: E402

IMGSZ = 320
PAD_VALUE = 114
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


# ------------------------------------------------------------------ preprocessing


def letterbox(image: np.ndarray, size: int = IMGSZ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect, pad to size x size with 114, centred as Ultralytics does.

    Returns the padded image (same channel order as the input), the scale ratio and
    the (left, top) padding.
    """
    h, w = image.shape[:2]
    ratio = min(size / h, size / w)
    new_w, new_h = int(round(w * ratio)), int(round(h * ratio))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return padded, ratio, (left, top)


def to_input(letterboxed_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 HxWx3 -> float32 RGB [1, 3, H, W] in [0, 1]."""
    rgb = letterboxed_bgr[:, :, ::-1]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def preprocess(image_bgr: np.ndarray, size: int = IMGSZ) -> tuple[np.ndarray, float, tuple[int, int]]:
    padded, ratio, pad = letterbox(image_bgr, size)
    return to_input(padded), ratio, pad


# ------------------------------------------------------------------ decode / NMS


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xy, half = xywh[:, :2], xywh[:, 2:4] / 2
    return np.concatenate([xy - half, xy + half], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, shape [len(a), len(b)]."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int = 1 << 30) -> np.ndarray:
    """Greedy NMS; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_keep:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        overlaps = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(output: np.ndarray, conf: float, iou: float, max_det: int = 100, max_nms: int = 1000):
    """[1, 4 + nc, N] -> (boxes xyxy [K, 4] in model-input pixels, scores [K], classes [K])."""
    pred = np.asarray(output)[0].T  # [N, 4 + nc]
    class_scores = pred[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(pred)), classes]
    keep = np.nonzero(scores >= conf)[0]
    if len(keep) > max_nms:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:max_nms]]
    boxes = xywh_to_xyxy(pred[keep, :4])
    scores, classes = scores[keep], classes[keep]
    if not len(scores):
        return boxes, scores, classes
    # Class-aware NMS: offset each class into its own coordinate range.
    offset = classes[:, None].astype(np.float32) * 4096.0
    kept = nms(boxes + offset, scores, iou, max_det)
    return boxes[kept], scores[kept], classes[kept]


def boxes_to_frame(boxes: np.ndarray, ratio: float, pad: tuple[int, int], frame_shape) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    h, w = frame_shape[:2]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


# ------------------------------------------------------------------ metrics


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolated (COCO)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


def match_predictions(pred_boxes, pred_classes, gt_boxes, gt_classes) -> np.ndarray:
    """[P, 10] bool: prediction is a true positive at each IoU threshold (Ultralytics matching)."""
    correct = np.zeros((len(pred_boxes), len(IOU_THRESHOLDS)), bool)
    if not len(pred_boxes) or not len(gt_boxes):
        return correct
    iou = box_iou(gt_boxes, pred_boxes) * (gt_classes[:, None] == pred_classes[None, :])
    for t, thr in enumerate(IOU_THRESHOLDS):
        gi, pi = np.nonzero(iou >= thr)
        if not len(gi):
            continue
        order = np.argsort(-iou[gi, pi], kind="stable")
        gi, pi = gi[order], pi[order]
        _, first = np.unique(pi, return_index=True)
        gi, pi = gi[first], pi[first]
        order = np.argsort(-iou[gi, pi], kind="stable")
        gi, pi = gi[order], pi[order]
        _, first = np.unique(gi, return_index=True)
        correct[pi[first], t] = True
    return correct


def mean_average_precision(detections, ground_truth, num_classes: int, names=DEFECT_KINDS) -> dict:
    """detections: per image (boxes xyxy, scores, classes); ground_truth: per image (boxes, _, classes).

    Returns mAP@0.5, mAP@0.5:0.95 and per-class AP@0.5 over the classes that occur
    (keyed by ``names``; the default names are the inspection defect kinds).
    """
    tps, confs, pcls, gcls = [], [], [], []
    for (pb, ps, pc), (gb, _, gc) in zip(detections, ground_truth):
        tps.append(match_predictions(pb, pc, gb, gc))
        confs.append(ps)
        pcls.append(pc)
        gcls.append(gc)
    tp = np.concatenate(tps) if tps else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pred_cls = np.concatenate(pcls) if pcls else np.zeros(0, np.int64)
    gt_cls = np.concatenate(gcls) if gcls else np.zeros(0, np.int64)
    order = np.argsort(-conf, kind="stable")
    tp, pred_cls = tp[order], pred_cls[order]

    ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    for c in range(num_classes):
        n_gt = int((gt_cls == c).sum())
        if n_gt == 0:
            continue
        tpc = tp[pred_cls == c]
        if not len(tpc):
            ap[c] = 0.0
            continue
        ctp = np.cumsum(tpc, axis=0)
        cfp = np.cumsum(~tpc, axis=0)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, 1e-9)
        for t in range(len(IOU_THRESHOLDS)):
            ap[c, t] = average_precision(recall[:, t], precision[:, t])
    present = ~np.isnan(ap[:, 0])
    return {
        "map50": float(ap[present, 0].mean()) if present.any() else 0.0,
        "map50_95": float(ap[present].mean()) if present.any() else 0.0,
        "ap50_per_class": {names[c] if c < len(names) else str(c): float(ap[c, 0])
                           for c in range(num_classes) if present[c]},
    }


# ------------------------------------------------------------------ OpenVINO


def compile_ir(ir_path, hint: str = "LATENCY", core=None):
    """Layers that are not quantised run in f32: a CPU with AVX-512 BF16 or AMX would otherwise run
    an FP32 IR in bf16, and the FP32 reference (and every figure) would depend on the machine."""
    import openvino as ov

    core = core or ov.Core()
    return core.compile_model(core.read_model(str(ir_path)), "CPU",
                              {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"})


@dataclass(frozen=True)
class PreparedPart:
    """A render, letterboxed once so several IRs can be scored on identical input."""

    part: RenderedPart
    tensor: np.ndarray
    ratio: float
    pad: tuple[int, int]


def prepare(parts) -> list[PreparedPart]:
    out = []
    for p in parts:
        x, ratio, pad = preprocess(p.image)
        out.append(PreparedPart(p, x, ratio, pad))
    return out


def render_parts(renderer_seed: int, n: int) -> list[RenderedPart]:
    renderer = PartRenderer(seed=renderer_seed)
    return [renderer.render() for _ in range(n)]


def evaluate_detector(ir_path, renderer_seed: int, n: int, conf: float = 0.001, iou: float = 0.6, *,
                      op_conf: float = 0.4, prepared: list[PreparedPart] | None = None) -> dict:
    """mAP of the IR on n fresh renders from renderer_seed, plus part-level numbers at op_conf.

    A part counts as flagged when any detection reaches op_conf. ``prepared`` skips
    rendering (it must be the renders of renderer_seed) so FP32 and INT8 share input.
    """
    if prepared is None:
        prepared = prepare(render_parts(renderer_seed, n))
    prepared = prepared[:n]
    compiled = compile_ir(ir_path)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    nc = int(output.get_partial_shape()[1].get_length()) - 4

    detections, ground_truth, part_top = [], [], []
    counts = dict(parts=len(prepared), good_parts=0, good_flagged=0, defective_parts=0, defective_missed=0,
                  critical_parts=0, critical_missed=0, critical_defects=0, critical_defects_unlocated=0)
    for item in prepared:
        raw = request.infer({0: item.tensor})[output]
        boxes, scores, classes = decode(raw, conf, iou)
        boxes = boxes_to_frame(boxes, item.ratio, item.pad, item.part.image.shape)
        gt_boxes = np.array([d.box for d in item.part.defects], np.float32).reshape(-1, 4)
        gt_classes = np.array([DEFECT_KINDS.index(d.kind) for d in item.part.defects], np.int64)
        detections.append((boxes, scores, classes))
        ground_truth.append((gt_boxes, None, gt_classes))

        top_score = float(scores.max()) if len(scores) else 0.0
        part_top.append((top_score, item.part.good, item.part.critical))
        flagged = top_score >= op_conf
        if item.part.good:
            counts["good_parts"] += 1
            counts["good_flagged"] += flagged
        else:
            counts["defective_parts"] += 1
            counts["defective_missed"] += not flagged
        if item.part.critical:
            counts["critical_parts"] += 1
            counts["critical_missed"] += not flagged
            # Stricter: every critical defect is also located (any class, IoU >= 0.5).
            strong = boxes[scores >= op_conf]
            for d in item.part.defects:
                if d.severity != "critical":
                    continue
                counts["critical_defects"] += 1
                located = len(strong) and box_iou(np.array([d.box], np.float32), strong).max() >= 0.5
                counts["critical_defects_unlocated"] += not located

    result = mean_average_precision(detections, ground_truth, nc)
    result.update(counts)
    result["op_conf"] = op_conf
    result["good_false_flag_rate"] = counts["good_flagged"] / max(counts["good_parts"], 1)
    top = np.array([t[0] for t in part_top])
    good = np.array([t[1] for t in part_top], bool)
    critical = np.array([t[2] for t in part_top], bool)
    # Margins around the operating threshold: the weakest defective parts and the strongest good ones.
    result["lowest_critical_part_score"] = float(top[critical].min()) if critical.any() else None
    result["lowest_defective_part_score"] = float(top[~good].min()) if (~good).any() else None
    result["highest_good_part_score"] = float(top[good].max()) if good.any() else None
    result["threshold_sweep"] = {
        f"{t:.2f}": {"critical_missed": int((critical & (top < t)).sum()),
                     "defective_missed": int((~good & (top < t)).sum()),
                     "good_flagged": int((good & (top >= t)).sum())}
        for t in (0.2, 0.3, 0.4, 0.5, 0.6)
    }
    result["renderer_seed"] = renderer_seed
    return result


def measure_latency(ir_path, runs: int = 200, warmup: int = 20) -> dict:
    """Single-image synchronous latency on CPU with the LATENCY hint, in milliseconds."""
    compiled = compile_ir(ir_path, "LATENCY")
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    for _ in range(warmup):
        request.infer({0: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: x})
        times.append((time.perf_counter() - t0) * 1000)
    times = np.array(times)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean())}
