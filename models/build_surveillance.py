"""Build the shipped surveillance models from the street simulator.

    .venv/bin/python models/build_surveillance.py                 # both models
    .venv/bin/python models/build_surveillance.py --only detector
    .venv/bin/python models/build_surveillance.py --only classifier

Renders street scenes with hw_sim.street_scene.StreetRenderer into memory, trains with
PyTorch on the CPU (one thread by default), converts with ``openvino.convert_model``
straight from torch, quantizes to INT8 with NNCF (min/max ranges, calibration renders),
evaluates FP32 and INT8 through the agent's own ``Detector`` / ``Classifier`` on
held-out renders and writes the model cards.

surveillance-detector: person / vehicle, anchor-free, strides 8/16/32, YOLOv8 output
    layout [1, 4 + 2, N]. Input [1, 3, 320, 416] (h, w) RGB [0, 1], letterboxed with 114:
    a 640x480 frame scales by 0.65 to 416x312, so a 12 px person keeps ~8 input pixels.
    The network mirrors models/detector_lib.py's (stem, one stage per stride, top-down fusion,
    IoU-aware centre-prior loss, reusing its giou and NNCF settings) but is defined here because
    detector_lib only builds square inputs; 416x320 costs ~25% less than 416x416 per step.
vehicle-types: car / van / truck / bus from a vehicle crop (box + 4 px margin, at least
    16 px, from the full-resolution frame, as agent.infer.cascade cuts it), stretched to
    [N, 3, 64, 64] RGB [0, 1]; output logits [N, 4].

Output (mirrors ``yolo export format=openvino``):
    <out>/fp32/<name>.{xml,bin}, metadata.yaml
    <out>/int8/<name>.{xml,bin}, metadata.yaml
    <out>/card.json, <out>/CARD.md

Seeds (renderer seeds; none overlap):
    detector:   training 11000 + chunk, calibration 12000, evaluation 13000, tests 19000
    classifier: training 21000 + chunk, calibration 22000, evaluation 23000, tests 29000
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hw_sim.street_scene import CLASSES, VEHICLE_TYPES, StreetRenderer  # noqa: E402

VERSION = "1.0.0"

DET_NAME = "surveillance-detector"
DET_H, DET_W = 320, 416  # model input (height, width)
STRIDES = (8, 16, 32)
LEVEL_LIMITS = (32.0, 96.0)  # input px: longer side <= 32 -> stride 8, <= 96 -> stride 16, else 32
MAX_OBJECTS = 12  # render() emits at most 6 persons + 4 vehicles
DET_TRAIN_SEED_BASE = 11000
DET_CALIB_SEED = 12000
DET_EVAL_SEED = 13000
DET_TEST_SEED = 19000  # reserved for tests/test_model_accuracy_surveillance.py

CLS_NAME = "vehicle-types"
CLS_SIZE = 64
CROP_MARGIN, CROP_MIN = 4, 16  # as agent.infer.cascade.Cascade
CLS_TRAIN_SEED_BASE = 21000
CLS_CALIB_SEED = 22000
CLS_EVAL_SEED = 23000
CLS_TEST_SEED = 29000  # reserved for tests/test_model_accuracy_surveillance.py

CHUNK = 100  # renders per renderer seed


def _cls_spec():
    from models.classifier_lib import ClassifierSpec

    return ClassifierSpec(name=CLS_NAME, names=tuple(VEHICLE_TYPES), imgsz=CLS_SIZE, widths=(16, 32, 64, 128),
                          version=VERSION)


CLS_SPEC = _cls_spec()
PAD_VALUE = 114


# ================================================================== data


def letterbox_frame(image: np.ndarray):
    """u8 BGR frame -> letterboxed u8 BGR (DET_H, DET_W) and the agent's Letterbox for it."""
    from agent.infer.geometry import letterbox

    return letterbox(image, (DET_H, DET_W))


def det_tensor(image: np.ndarray) -> np.ndarray:
    """u8 BGR frame -> float32 RGB [1, 3, DET_H, DET_W] in [0, 1] (calibration input)."""
    padded, _ = letterbox_frame(image)
    return np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / np.float32(255)


def _render_det_chunk(seed: int, n: int):
    """Letterboxed RGB CHW u8 images and [n, MAX_OBJECTS, 5] (class, x1, y1, x2, y2) in input px."""
    import cv2

    cv2.setNumThreads(1)
    renderer = StreetRenderer(seed=seed)
    images = np.empty((n, 3, DET_H, DET_W), np.uint8)
    targets = np.zeros((n, MAX_OBJECTS, 5), np.float32)
    targets[:, :, 0] = -1
    for i in range(n):
        scene = renderer.render()
        padded, box = letterbox_frame(scene.image)
        images[i] = padded[:, :, ::-1].transpose(2, 0, 1)
        for j, o in enumerate(scene.objects[:MAX_OBJECTS]):
            x1, y1, x2, y2 = o.box
            targets[i, j] = (CLASSES.index(o.kind), x1 * box.scale + box.pad_x, y1 * box.scale + box.pad_y,
                             x2 * box.scale + box.pad_x, y2 * box.scale + box.pad_y)
    return images, targets


def vehicle_crop(image: np.ndarray, box, rng: np.random.Generator | None = None, jitter: float = 0.0) -> np.ndarray:
    """The crop agent.infer.cascade takes for `box` (classifier_lib.cascade_crop), optionally with
    the box jittered first (a detector's box is never exactly the ground truth)."""
    from models.classifier_lib import cascade_crop

    return cascade_crop(image, box, rng=rng, jitter=jitter)


def _render_crop_chunk(seed: int, n: int, jittered: int = 0):
    """Vehicle crops from n renders, resized as the agent does: u8 BGR [k, 64, 64, 3], labels [k],
    visibility [k]. Each vehicle gives its exact crop plus `jittered` crops with a jittered box."""
    import cv2

    from models.classifier_lib import resize_crops

    cv2.setNumThreads(1)
    renderer = StreetRenderer(seed=seed)
    rng = np.random.default_rng(seed + 7)
    crops, labels, vis = [], [], []
    for _ in range(n):
        scene = renderer.render()
        for o in scene.objects:
            if o.kind != "vehicle":
                continue
            for k in range(1 + jittered):
                crops.append(vehicle_crop(scene.image, o.box, rng if k else None, 0.1))
                labels.append(VEHICLE_TYPES.index(o.subtype))
                vis.append(o.visibility)
    return resize_crops(CLS_SPEC, crops), np.array(labels, np.int64), np.array(vis, np.float32)


def _chunks(base: int, n: int):
    return [(base + k, min(CHUNK, n - k * CHUNK)) for k in range(math.ceil(n / CHUNK))]


def render_pool(fn, chunks, workers: int, *extra):
    import multiprocessing

    # spawn, not fork: the classifier build has already started torch's thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*chunks), *([e] * len(chunks) for e in extra)))


def render_scenes(seed: int, n: int):
    renderer = StreetRenderer(seed=seed)
    return [renderer.render() for _ in range(n)]


# ================================================================== detector model


def build_detector():
    import torch
    from torch import nn

    def conv(c1, c2, k=3, s=1):
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    class SurveillanceDetector(nn.Module):
        """Three-level (strides 8, 16, 32) anchor-free detector with a YOLOv8-layout output."""

        def __init__(self, nc: int = len(CLASSES), widths=(16, 32, 64, 96, 128)):
            super().__init__()
            a, b, c, d, e = widths
            self.nc = nc
            self.stem = nn.Sequential(conv(3, a, 3, 2), conv(a, b, 3, 2), conv(b, b))  # stride 4
            self.stage8 = nn.Sequential(conv(b, c, 3, 2), conv(c, c))
            self.stage16 = nn.Sequential(conv(c, d, 3, 2), conv(d, d))
            self.stage32 = nn.Sequential(conv(d, e, 3, 2), conv(e, e), conv(e, e))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse16 = nn.Sequential(conv(d + e, d, 1), conv(d, d))
            self.fuse8 = nn.Sequential(conv(c + d, c, 1), conv(c, c))
            self.head8 = nn.Sequential(conv(c, c), nn.Conv2d(c, 4 + nc, 1))
            self.head16 = nn.Sequential(conv(d, c), nn.Conv2d(c, 4 + nc, 1))
            self.head32 = nn.Sequential(conv(e, c), nn.Conv2d(c, 4 + nc, 1))
            prior = -math.log((1 - 0.01) / 0.01)
            for head in (self.head8, self.head16, self.head32):
                nn.init.zeros_(head[-1].bias)
                nn.init.normal_(head[-1].weight, std=0.01)
                head[-1].bias.data[4:] = prior
            anchors, strides = [], []
            for s in STRIDES:
                gh, gw = DET_H // s, DET_W // s
                ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
                anchors.append(torch.stack([xs, ys], 0).reshape(2, -1).float().add(0.5).mul(s))
                strides.append(torch.full((1, gh * gw), float(s)))
            self.register_buffer("anchors", torch.cat(anchors, 1))  # [2, N] pixel centres
            self.register_buffer("strides", torch.cat(strides, 1))  # [1, N]

        def raw(self, images):
            x = self.stem(images)
            p8 = self.stage8(x)
            p16 = self.stage16(p8)
            p32 = self.stage32(p16)
            n16 = self.fuse16(torch.cat([p16, self.up(p32)], 1))
            n8 = self.fuse8(torch.cat([p8, self.up(n16)], 1))
            out = torch.cat([self.head8(n8).flatten(2), self.head16(n16).flatten(2), self.head32(p32).flatten(2)], 2)
            xy = self.anchors + out[:, :2] * self.strides
            wh = torch.exp(out[:, 2:4].clamp(-6.0, 6.0)) * self.strides
            return torch.cat([xy, wh], 1), out[:, 4:]

        def forward(self, images):
            boxes, logits = self.raw(images)
            return torch.cat([boxes, logits.sigmoid()], 1)

    return SurveillanceDetector()


def assign(model, targets):
    """Centre-prior assignment on one pyramid level per object (chosen by its longer side).

    targets [B, M, 5] (class, x1, y1, x2, y2; class -1 = padding). Returns positive mask
    [B, N], target boxes xyxy [B, N, 4] and target classes [B, N].
    """
    import torch

    ax, ay = model.anchors[0], model.anchors[1]
    s = model.strides[0]
    cls = targets[..., 0]
    x1, y1, x2, y2 = (targets[..., i, None] for i in range(1, 5))
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    longest = torch.maximum(w, h)
    level = torch.where(longest <= LEVEL_LIMITS[0], STRIDES[0],
                        torch.where(longest <= LEVEL_LIMITS[1], STRIDES[1], STRIDES[2]))
    level_ok = s == level
    # Anchors within a stride of the centre and inside the box (thin persons keep >= 1 anchor).
    near = ((ax - cx).abs() <= s + 1e-3) & ((ay - cy).abs() <= s + 1e-3)
    inside = (ax >= x1 - s / 2) & (ax <= x2 + s / 2) & (ay >= y1 - s / 2) & (ay <= y2 + s / 2)
    pos = near & inside & level_ok & (cls[..., None] >= 0)
    area = torch.where(pos, (w * h).expand_as(pos), torch.full_like(pos, float("inf"), dtype=torch.float32))
    best = area.argmin(1)
    positive = pos.any(1)
    tgt = torch.gather(targets, 1, best[..., None].expand(-1, -1, 5))
    return positive, tgt[..., 1:], tgt[..., 0].long()


def detection_loss(model, images, targets):
    import torch
    import torch.nn.functional as F

    from models.detector_lib import giou

    boxes, logits = model.raw(images)
    positive, tgt_box, tgt_cls = assign(model, targets)
    num_pos = max(int(positive.sum()), 1)
    cls_target = torch.zeros_like(logits)
    b_idx, n_idx = positive.nonzero(as_tuple=True)
    if len(b_idx):
        pb = boxes.permute(0, 2, 1)[b_idx, n_idx]
        pb = torch.cat([pb[:, :2] - pb[:, 2:] / 2, pb[:, :2] + pb[:, 2:] / 2], 1)
        tb = tgt_box[b_idx, n_idx]
        g, iou = giou(pb, tb)
        cls_target[b_idx, tgt_cls[b_idx, n_idx], n_idx] = iou.detach().clamp(0, 1)  # IoU-aware scores
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / num_pos
    if len(b_idx):
        stride = model.strides[0, n_idx][:, None]
        box_loss = (1 - g).mean()
        l1_loss = ((pb - tb).abs() / stride).mean()
    else:
        box_loss = l1_loss = boxes.sum() * 0
    return cls_loss + 2.5 * box_loss + 0.5 * l1_loss, (cls_loss.item(), box_loss.item(), l1_loss.item())


def hflip(images, targets, generator):
    """Random horizontal flips (street scenes are left/right symmetric; vertical flips are not)."""
    import torch

    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = images.clone()
    t = targets.clone()
    images[flip] = images[flip].flip(3)
    fx = flip[:, None] & (t[..., 0] >= 0)
    x1, x2 = t[..., 1].clone(), t[..., 3].clone()
    t[..., 1] = torch.where(fx, DET_W - x2, x1)
    t[..., 3] = torch.where(fx, DET_W - x1, x2)
    return images, t


def photometric(x, generator):
    """Per-image brightness / contrast jitter on float [0, 1] images (x is modified)."""
    import torch

    b = x.shape[0]
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.4
    bias = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.1
    return x.mul_(gain).add_(bias).clamp_(0, 1)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _ema_update(ema, model, step: int, horizon: float = 100.0):
    import torch

    d = 0.998 * (1 - math.exp(-step / horizon))
    with torch.no_grad():
        msd = model.state_dict()
        for key, v in ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[key].detach(), alpha=1 - d)
            else:
                v.copy_(msd[key])


def _optimizer(model, lr: float, wd: float = 5e-4):
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.99))


def train_detector(images_u8, targets, epochs: int, batch: int, lr: float, seed: int, log):
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_detector()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = _optimizer(model, lr)
    images_t, targets_t = torch.from_numpy(images_u8), torch.from_numpy(targets)
    n = len(images_t)
    steps_per_epoch = n // batch
    total = steps_per_epoch * epochs
    warmup = min(150, total // 10)
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        running = np.zeros(3)
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            x, y = hflip(images_t[idx], targets_t[idx], generator)
            x = photometric(x.float().div_(255.0), generator)
            factor = _schedule(step, total, warmup)
            for g in opt.param_groups:
                g["lr"] = lr * factor
            loss, parts = detection_loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            _ema_update(ema, model, step)
            running += parts
        running /= max(steps_per_epoch, 1)
        log(f"detector epoch {epoch + 1}/{epochs}: cls {running[0]:.3f} giou {running[1]:.3f} "
            f"l1 {running[2]:.3f} ({time.time() - t0:.0f}s)")
    return ema.eval()


# ================================================================== export


def _metadata(name: str, description: str, task: str, names, imgsz, stride=None, int8=False) -> dict:
    meta = {
        "description": description,
        "author": "edge-agent",
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "version": VERSION,
        "license": "Apache-2.0",
    }
    if stride is not None:
        meta["stride"] = stride
    meta.update({"task": task, "batch": 1, "imgsz": list(imgsz), "names": {i: k for i, k in enumerate(names)},
                 "args": {"format": "openvino", "int8": int8}})
    return meta


def write_ir(ov_model, out_dir: Path, name: str, meta: dict) -> Path:
    import openvino as ov
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{name}.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    with open(out_dir / "metadata.yaml", "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    return xml


def export(model, shape, in_name: str, out_name: str):
    import openvino as ov
    import torch

    with torch.no_grad():
        ov_model = ov.convert_model(model.eval(), example_input=torch.zeros(*shape), input=[list(shape)])
    ov_model.inputs[0].get_tensor().set_names({in_name})
    ov_model.outputs[0].get_tensor().set_names({out_name})
    return ov_model


def quantize(ov_model, calib_inputs):
    """NNCF PTQ of the convolutions, plain min/max activation ranges (models/detector_lib.py)."""
    from models.detector_lib import quantize_int8

    return quantize_int8(ov_model, calib_inputs)


def file_table(out: Path, name: str) -> dict:
    from models.detector_lib import file_hashes

    return file_hashes(out, name)


def measure_latency(xml: Path, shape, runs: int = 200, warmup: int = 20) -> dict:
    """Single-input synchronous latency of the bare IR on CPU with the LATENCY hint, ms."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
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


# ================================================================== evaluation (through the agent)


def evaluate_detector(xml: Path, scenes, conf: float = 0.001, iou: float = 0.6, op_conf: float = 0.25) -> dict:
    """COCO-style mAP of the IR run by agent.infer.engine.Detector (in-graph letterbox) on scenes,
    plus recall of small persons at op_conf."""
    from agent.infer.engine import Detector
    from models.evaluate import box_iou, mean_average_precision

    detector = Detector(xml, iou_threshold=iou, max_detections=100)
    detections, ground_truth = [], []
    small, small_found = 0, 0
    for scene in scenes:
        dets = detector.detect(scene.image, conf)
        boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
        scores = np.array([d.score for d in dets], np.float32)
        classes = np.array([d.class_id for d in dets], np.int64)
        gt_boxes = np.array([o.box for o in scene.objects], np.float32).reshape(-1, 4)
        gt_classes = np.array([CLASSES.index(o.kind) for o in scene.objects], np.int64)
        detections.append((boxes, scores, classes))
        ground_truth.append((gt_boxes, None, gt_classes))
        strong = boxes[(scores >= op_conf) & (classes == 0)]
        for o in scene.objects:
            if o.kind == "person" and o.box[3] - o.box[1] < 32:
                small += 1
                small_found += bool(len(strong)) and box_iou(np.array([o.box], np.float32), strong).max() >= 0.5
    r = mean_average_precision(detections, ground_truth, len(CLASSES), names=CLASSES)
    r["images"] = len(scenes)
    r["objects"] = {k: sum(o.kind == k for s in scenes for o in s.objects) for k in CLASSES}
    r["small_persons"] = small
    r["small_person_recall"] = small_found / max(small, 1)
    r["op_conf"] = op_conf
    return r


def classifier_crops(scenes):
    """Exact cascade crops (original sizes, BGR) of every ground-truth vehicle, labels, visibility."""
    crops, labels, vis = [], [], []
    for scene in scenes:
        for o in scene.objects:
            if o.kind == "vehicle":
                crops.append(vehicle_crop(scene.image, o.box))
                labels.append(VEHICLE_TYPES.index(o.subtype))
                vis.append(o.visibility)
    return crops, np.array(labels, np.int64), np.array(vis, np.float32)


def evaluate_classifier(xml: Path, crops, labels, vis, batch: int = 64) -> dict:
    """Top-1 of the IR run by agent.infer.engine.Classifier on cascade crops."""
    from agent.infer.engine import Classifier

    clf = Classifier(xml)
    pred = []
    for i in range(0, len(crops), batch):
        pred += [VEHICLE_TYPES.index(r[0][0]) for r in clf.classify(crops[i : i + batch], k=1)]
    pred = np.array(pred, np.int64)
    ok = pred == labels
    confusion = np.zeros((len(VEHICLE_TYPES), len(VEHICLE_TYPES)), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    mostly = vis >= 0.5
    return {
        "crops": int(len(labels)),
        "top1": float(ok.mean()) if len(ok) else 0.0,
        "top1_visibility_ge_0.5": float(ok[mostly].mean()) if mostly.any() else None,
        "top1_visibility_lt_0.5": float(ok[~mostly].mean()) if (~mostly).any() else None,
        "per_class_recall": {k: float(ok[labels == i].mean()) if (labels == i).any() else None
                             for i, k in enumerate(VEHICLE_TYPES)},
        "confusion": confusion.tolist(),  # rows: truth, columns: prediction
    }


# ================================================================== cards


def _md_files(files: dict) -> list[str]:
    lines = ["| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {n} | {i['bytes']} | `{i['sha256']}` |" for n, i in files.items()]
    return lines


def write_det_card(out: Path, card: dict) -> None:
    with open(out / "card.json", "w") as f:
        json.dump(card, f, indent=2)
    m = card["metrics"]
    fp, q = m["fp32"], m["int8"]
    tr = card["training"]
    lines = [
        f"# {DET_NAME} {card['version']}",
        "",
        "Person / vehicle detector for high-mounted street, car-park and entrance cameras, trained only on",
        "renders from `hw_sim.street_scene.StreetRenderer`. The shipped model is the INT8 IR; the FP32 IR is",
        "kept for reference.",
        "",
        "## Interface",
        "",
        f"- Classes: {', '.join(f'{i} = {k}' for i, k in enumerate(card['classes']))}",
        f"- Input `images`: [1, 3, {DET_H}, {DET_W}] (height, width) float32 RGB in [0, 1], letterboxed keeping "
        "aspect, padded with 114 (centred, Ultralytics style). A 640x480 frame scales by 0.65 to 416x312.",
        f"- Output `output0`: [1, {4 + len(CLASSES)}, {card['num_anchors']}] (YOLOv8 detect layout): rows 0-3 box "
        "centre-x, centre-y, width, height in input pixels; rows 4-5 class scores after sigmoid. Needs NMS.",
        f"- Anchor-free, strides {list(STRIDES)}, {card['parameters']:,} parameters.",
        "",
        "## Training",
        "",
        f"- {tr['images']} renders at 640x480 (0-6 persons, 0-4 vehicles each), renderer seeds "
        f"{tr['renderer_seeds'][0]}..{tr['renderer_seeds'][1]} ({CHUNK} per seed), light jitter 0.3, noise 6.",
        f"- {tr['epochs']} epochs, batch {tr['batch']}, AdamW lr {tr['lr']}, horizontal flips and brightness/"
        f"contrast jitter, EMA; torch seed {tr['torch_seed']}; {tr['seconds']:.0f} s on {tr['threads']} CPU thread(s).",
        f"- INT8: NNCF post-training quantization, {card['calibration']['images']} calibration renders "
        f"(renderer seed {card['calibration']['renderer_seed']}), convolutions only, min/max activation ranges.",
        "",
        f"## Metrics (held-out renders, renderer seed {card['evaluation']['renderer_seed']}, {fp['images']} frames, "
        f"{fp['objects']['person']} persons, {fp['objects']['vehicle']} vehicles)",
        "",
        "Run through the agent's own `Detector` (in-graph letterbox), conf 0.001, class-aware NMS IoU 0.6.",
        "",
        "| | FP32 | INT8 |",
        "|---|---|---|",
        f"| mAP@0.5 | {fp['map50']:.4f} | {q['map50']:.4f} |",
        f"| mAP@0.5:0.95 | {fp['map50_95']:.4f} | {q['map50_95']:.4f} |",
    ]
    for k in card["classes"]:
        lines.append(f"| AP@0.5 {k} | {fp['ap50_per_class'].get(k, float('nan')):.4f} | "
                     f"{q['ap50_per_class'].get(k, float('nan')):.4f} |")
    lines += [
        f"| recall, persons < 32 px tall (conf {fp['op_conf']}, IoU 0.5) | {fp['small_person_recall']:.3f} "
        f"({fp['small_persons']}) | {q['small_person_recall']:.3f} ({q['small_persons']}) |",
        f"| latency median ms (bare IR, CPU, LATENCY hint) | {m['latency']['fp32']['median_ms']:.2f} | "
        f"{m['latency']['int8']['median_ms']:.2f} |",
        "",
        f"Latency measured on: {card['measured_on']} (shared machine, another training job running; indicative).",
        "",
        "## Files",
        "",
        *_md_files(card["files"]),
        "",
        "## Rebuild",
        "",
        "```",
        card["rebuild_command"],
        "```",
        "",
        f"Build time: {card['build_seconds'] / 60:.1f} min. Training is seeded, but CPU kernels are not "
        "bit-exact across machines: a rebuild gives close metrics, not identical bytes.",
        "",
        "## Limits",
        "",
        "- Simulator renders only; never seen a real camera. Ground truth omits objects under 12 px tall or "
        "less than 20% visible, so the model is not asked to find those.",
        f"- `tests/test_model_accuracy_surveillance.py` re-checks the shipped IRs on renderer seed {DET_TEST_SEED}.",
        *[f"- {note}" for note in card.get("notes", [])],
        "",
    ]
    (out / "CARD.md").write_text("\n".join(lines))


def write_cls_card(out: Path, card: dict) -> None:
    with open(out / "card.json", "w") as f:
        json.dump(card, f, indent=2)
    m = card["metrics"]
    fp, q = m["fp32"], m["int8"]
    tr = card["training"]
    lines = [
        f"# {CLS_NAME} {card['version']}",
        "",
        "Vehicle type classifier for the surveillance detect -> classify cascade, trained only on crops of",
        "`hw_sim.street_scene.StreetRenderer` renders. The shipped model is the INT8 IR; FP32 is kept for reference.",
        "",
        "## Interface",
        "",
        f"- Classes: {', '.join(f'{i} = {k}' for i, k in enumerate(card['classes']))}",
        f"- Input `images`: [N, 3, {CLS_SIZE}, {CLS_SIZE}] float32 RGB in [0, 1]; the crop (detector box + "
        f"{CROP_MARGIN} px margin, at least {CROP_MIN} px, from the full-resolution frame, as "
        "`agent.infer.cascade.Cascade` cuts it) is stretched to the input without keeping aspect.",
        f"- Output `logits`: [N, {len(VEHICLE_TYPES)}] logits (the agent applies softmax). Model: "
        f"`models/classifier_lib.py` CNN, widths {card['widths']}, {card['parameters']:,} parameters.",
        "",
        "## Training",
        "",
        f"- {tr['crops']} crops from {tr['renders']} renders, renderer seeds {tr['renderer_seeds'][0]}.."
        f"{tr['renderer_seeds'][1]}: each vehicle's exact crop plus {tr['jittered_per_vehicle']} with the box "
        "jittered by up to 10% per side (detector boxes are never exact).",
        f"- {tr['epochs']} epochs, batch {tr['batch']}, AdamW lr {tr['lr']}, label smoothing 0.05, horizontal flips, "
        f"brightness/contrast jitter, EMA; torch seed {tr['torch_seed']}; {tr['seconds']:.0f} s on "
        f"{tr['threads']} CPU thread(s).",
        f"- INT8: NNCF post-training quantization, {card['calibration']['crops']} calibration crops "
        f"(renderer seed {card['calibration']['renderer_seed']}), min/max activation ranges.",
        "",
        f"## Metrics (held-out renders, renderer seed {card['evaluation']['renderer_seed']}, {fp['crops']} "
        "ground-truth vehicle crops)",
        "",
        "Run through the agent's own `Classifier` (cv2 resize, in-graph colour/scale).",
        "",
        "| | FP32 | INT8 |",
        "|---|---|---|",
        f"| top-1 | {fp['top1']:.4f} | {q['top1']:.4f} |",
        f"| top-1, visibility >= 0.5 | {_f(fp['top1_visibility_ge_0.5'])} | {_f(q['top1_visibility_ge_0.5'])} |",
        f"| top-1, visibility < 0.5 | {_f(fp['top1_visibility_lt_0.5'])} | {_f(q['top1_visibility_lt_0.5'])} |",
    ]
    for k in card["classes"]:
        lines.append(f"| recall {k} | {_f(fp['per_class_recall'][k])} | {_f(q['per_class_recall'][k])} |")
    lines += [
        f"| latency median ms (batch 1, CPU, LATENCY hint) | {m['latency']['fp32']['median_ms']:.3f} | "
        f"{m['latency']['int8']['median_ms']:.3f} |",
        "",
        f"INT8 confusion (rows truth, columns prediction, order {', '.join(VEHICLE_TYPES)}): {q['confusion']}",
        "",
        f"Latency measured on: {card['measured_on']} (shared machine; indicative).",
        "",
        "## Files",
        "",
        *_md_files(card["files"]),
        "",
        "## Rebuild",
        "",
        "```",
        card["rebuild_command"],
        "```",
        "",
        f"Build time: {card['build_seconds'] / 60:.1f} min.",
        "",
        "## Limits",
        "",
        "- Simulator renders only. Measured on ground-truth boxes; boxes from the detector are a little "
        "looser or tighter (training covers that with jittered boxes).",
        f"- `tests/test_model_accuracy_surveillance.py` re-checks the shipped IRs on renderer seed {CLS_TEST_SEED}.",
        *[f"- {note}" for note in card.get("notes", [])],
        "",
    ]
    (out / "CARD.md").write_text("\n".join(lines))


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _measured_on() -> str:
    import openvino

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, openvino {openvino.__version__}"


# ================================================================== builds


def build_detector_model(args, log, cmd: str) -> None:
    started = time.time()
    out: Path = args.out / DET_NAME
    chunks = _chunks(DET_TRAIN_SEED_BASE, args.det_train_images)
    log(f"detector: rendering {args.det_train_images} training frames (seeds {chunks[0][0]}..{chunks[-1][0]})")
    results = render_pool(_render_det_chunk, chunks, args.workers)
    images = np.concatenate([r[0] for r in results])
    targets = np.concatenate([r[1] for r in results])
    del results
    log(f"detector: {int((targets[..., 0] == 0).sum())} persons, {int((targets[..., 0] == 1).sum())} vehicles")

    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    t_train = time.time()
    model = train_detector(images, targets, args.det_epochs, args.det_batch, args.det_lr, args.seed, log)
    train_seconds = time.time() - t_train
    del images, targets

    ov_fp32 = export(model, (1, 3, DET_H, DET_W), "images", "output0")
    desc = "person/vehicle detector for street cameras"
    write_ir(ov_fp32, out / "fp32", DET_NAME, _metadata(DET_NAME, f"{DET_NAME} FP32: {desc}", "detect", CLASSES,
                                                        (DET_H, DET_W), max(STRIDES)))
    calib = [det_tensor(s.image) for s in render_scenes(DET_CALIB_SEED, args.det_calib_images)]
    ov_int8 = quantize(ov_fp32, calib)
    write_ir(ov_int8, out / "int8", DET_NAME, _metadata(DET_NAME, f"{DET_NAME} INT8: {desc}", "detect", CLASSES,
                                                        (DET_H, DET_W), max(STRIDES), int8=True))
    log(f"detector: saved IRs under {out}")

    held_out = render_scenes(DET_EVAL_SEED, args.det_eval_images)
    metrics = {}
    for name in ("fp32", "int8"):
        metrics[name] = r = evaluate_detector(out / name / f"{DET_NAME}.xml", held_out)
        log(f"detector {name}: mAP50 {r['map50']:.4f} mAP50-95 {r['map50_95']:.4f} {r['ap50_per_class']} "
            f"small-person recall {r['small_person_recall']:.3f} of {r['small_persons']}")
    metrics["latency"] = {n: measure_latency(out / n / f"{DET_NAME}.xml", (1, 3, DET_H, DET_W))
                          for n in ("fp32", "int8")}
    notes = []
    if metrics["int8"]["map50"] < 0.95:
        notes.append(f"Below the mAP@0.5 >= 0.95 target: INT8 {metrics['int8']['map50']:.4f}.")
    if metrics["int8"]["map50"] < metrics["fp32"]["map50"] - 0.01:
        notes.append("INT8 is more than 1 point below FP32.")
    card = {
        "name": DET_NAME, "version": VERSION, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": "detect", "classes": list(CLASSES),
        "input": {"name": "images", "shape": [1, 3, DET_H, DET_W], "layout": "NCHW", "colour": "RGB",
                  "scale": "0..1", "letterbox_pad": PAD_VALUE},
        "output": {"name": "output0", "layout": "[1, 4 + nc, N]: cx, cy, w, h (input pixels), class scores (sigmoid)"},
        "num_anchors": sum((DET_H // s) * (DET_W // s) for s in STRIDES),
        "strides": list(STRIDES),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"images": args.det_train_images, "renderer_seeds": [chunks[0][0], chunks[-1][0]],
                     "renders_per_seed": CHUNK, "epochs": args.det_epochs, "batch": args.det_batch,
                     "lr": args.det_lr, "torch_seed": args.seed, "threads": args.threads,
                     "seconds": round(train_seconds, 1)},
        "calibration": {"images": args.det_calib_images, "renderer_seed": DET_CALIB_SEED},
        "evaluation": {"images": args.det_eval_images, "renderer_seed": DET_EVAL_SEED, "nms_iou": 0.6,
                       "map_conf": 0.001, "runner": "agent.infer.engine.Detector"},
        "test_seed": DET_TEST_SEED,
        "metrics": metrics,
        "measured_on": _measured_on(),
        "files": file_table(out, DET_NAME),
        "rebuild_command": cmd,
        "build_seconds": round(time.time() - started, 1),
        "notes": notes,
    }
    write_det_card(out, card)
    log(f"detector: wrote {out / 'card.json'} and CARD.md ({card['build_seconds'] / 60:.1f} min)")


def build_classifier_model(args, log, cmd: str) -> None:
    started = time.time()
    out: Path = args.out / CLS_NAME
    chunks = _chunks(CLS_TRAIN_SEED_BASE, args.cls_train_renders)
    log(f"classifier: rendering {args.cls_train_renders} frames for crops (seeds {chunks[0][0]}..{chunks[-1][0]})")
    results = render_pool(_render_crop_chunk, chunks, args.workers, args.cls_jitter)
    crops = np.concatenate([r[0] for r in results])
    labels = np.concatenate([r[1] for r in results])
    del results
    log(f"classifier: {len(labels)} crops, per class {np.bincount(labels, minlength=len(VEHICLE_TYPES)).tolist()}")

    import torch

    from models import classifier_lib as clib

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    t_train = time.time()
    # Vehicles stand upright and the camera looks down: horizontal flips only.
    model = clib.train(CLS_SPEC, crops, labels, args.cls_epochs, args.cls_batch, args.cls_lr, args.seed, log,
                       augment=dict(hflip=True, vflip=False, rot90=False, color=0.15),
                       time_budget_s=args.cls_budget)
    epochs_run = getattr(model, "epochs_run", args.cls_epochs)
    train_seconds = time.time() - t_train
    n_crops = len(labels)
    del crops

    ov_fp32 = clib.export_fp32(CLS_SPEC, model)
    desc = "vehicle type (car/van/truck/bus) from a vehicle crop"
    clib.write_ir(CLS_NAME, ov_fp32, out / "fp32", clib.classifier_metadata(CLS_SPEC, f"{CLS_NAME} FP32: {desc}", False))
    calib_crops, _, _ = _render_crop_chunk(CLS_CALIB_SEED, args.cls_calib_renders)
    calib_crops = calib_crops[: args.cls_calib_crops]
    ov_int8 = clib.quantize_int8(ov_fp32, calib_crops)
    clib.write_ir(CLS_NAME, ov_int8, out / "int8", clib.classifier_metadata(CLS_SPEC, f"{CLS_NAME} INT8: {desc}", True))
    log(f"classifier: saved IRs under {out}")

    crops_eval, labels_eval, vis_eval = classifier_crops(render_scenes(CLS_EVAL_SEED, args.cls_eval_renders))
    metrics = {}
    for name in ("fp32", "int8"):
        metrics[name] = r = evaluate_classifier(out / name / f"{CLS_NAME}.xml", crops_eval, labels_eval, vis_eval)
        log(f"classifier {name}: top1 {r['top1']:.4f} on {r['crops']} crops, per class {r['per_class_recall']} "
            f"confusion {r['confusion']}")
    metrics["latency"] = {n: measure_latency(out / n / f"{CLS_NAME}.xml", (1, 3, CLS_SIZE, CLS_SIZE))
                          for n in ("fp32", "int8")}
    notes = []
    if metrics["int8"]["top1"] < 0.98:
        notes.append(f"Below the top-1 >= 98% target: INT8 {metrics['int8']['top1']:.4f}.")
    card = {
        "name": CLS_NAME, "version": VERSION, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": "classify", "classes": list(VEHICLE_TYPES),
        "input": {"name": "images", "shape": [-1, 3, CLS_SIZE, CLS_SIZE], "layout": "NCHW", "colour": "RGB",
                  "scale": "0..1", "resize": "stretch (cv2 INTER_LINEAR)",
                  "crop": f"box + {CROP_MARGIN} px margin, min {CROP_MIN} px, full-resolution frame"},
        "output": {"name": "logits", "layout": "[N, 4] logits"},
        "widths": list(CLS_SPEC.widths),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"renders": args.cls_train_renders, "crops": n_crops, "renderer_seeds": [chunks[0][0], chunks[-1][0]],
                     "renders_per_seed": CHUNK, "jittered_per_vehicle": args.cls_jitter, "epochs": epochs_run,
                     "batch": args.cls_batch, "lr": args.cls_lr, "torch_seed": args.seed, "threads": args.threads,
                     "seconds": round(train_seconds, 1)},
        "calibration": {"crops": len(calib_crops), "renderer_seed": CLS_CALIB_SEED},
        "evaluation": {"renders": args.cls_eval_renders, "renderer_seed": CLS_EVAL_SEED,
                       "runner": "agent.infer.engine.Classifier", "boxes": "ground truth"},
        "test_seed": CLS_TEST_SEED,
        "metrics": metrics,
        "measured_on": _measured_on(),
        "files": file_table(out, CLS_NAME),
        "rebuild_command": cmd,
        "build_seconds": round(time.time() - started, 1),
        "notes": notes,
    }
    write_cls_card(out, card)
    log(f"classifier: wrote {out / 'card.json'} and CARD.md ({card['build_seconds'] / 60:.1f} min)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("detector", "classifier"), help="build just one of the two models")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the build box is shared)")
    parser.add_argument("--workers", type=int, default=2, help="render processes")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for init and batch order")
    parser.add_argument("--det-train-images", type=int, default=2400)
    parser.add_argument("--det-epochs", type=int, default=8)
    parser.add_argument("--det-batch", type=int, default=16)
    parser.add_argument("--det-lr", type=float, default=3e-3)
    parser.add_argument("--det-calib-images", type=int, default=300)
    parser.add_argument("--det-eval-images", type=int, default=400)
    parser.add_argument("--cls-train-renders", type=int, default=6000)
    parser.add_argument("--cls-jitter", type=int, default=1, help="extra jittered-box crops per vehicle")
    parser.add_argument("--cls-epochs", type=int, default=10)
    parser.add_argument("--cls-budget", type=float, default=1200.0, help="stop training after this many seconds")
    parser.add_argument("--cls-batch", type=int, default=64)
    parser.add_argument("--cls-lr", type=float, default=3e-3)
    parser.add_argument("--cls-calib-renders", type=int, default=200)
    parser.add_argument("--cls-calib-crops", type=int, default=300)
    parser.add_argument("--cls-eval-renders", type=int, default=1000)
    args = parser.parse_args(argv)

    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    cmd = ".venv/bin/python models/build_surveillance.py"
    extra = sys.argv[1:] if argv is None else list(argv)
    if extra:
        cmd += " " + " ".join(extra)
    if args.only in (None, "classifier"):
        build_classifier_model(args, log, cmd)
    if args.only in (None, "detector"):
        build_detector_model(args, log, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
