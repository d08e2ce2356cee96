"""Shared pieces for building small anchor-free detectors with a YOLOv8-layout output.

Used by ``models/build_inspection.py`` and ``models/build_checkout.py`` (and meant to be
imported by other build scripts). Everything is parameterised by a ``DetectorSpec``:

    from models.detector_lib import DetectorSpec, letterbox_targets, render_training_set, train, \
        export_fp32, quantize_int8, write_ir, detector_metadata, evaluate_map, file_hashes, write_card_json

    spec = DetectorSpec(name="my-detector", names=("person", "vehicle"), imgsz=320,
                        strides=(8, 16), max_objects=8, level_split=(48,))

    # 1. data: a module-level function (picklable) rendering one chunk of n images from a
    #    renderer seed; each sample is (bgr_image, [(class_id, (x1, y1, x2, y2)), ...]) in
    #    frame pixels, turned into model input by letterbox_targets(spec, samples).
    def render_chunk(seed, n): return letterbox_targets(SPEC, [my_sample(...) for ...])
    images, targets, chunks = render_training_set(render_chunk, n_images, seed_base=1000, chunk=100, workers=1)
    # 2. train (torch, CPU): returns the EMA model in eval mode
    model = train(spec, images, targets, epochs=10, batch=16, lr=3e-3, seed=0, log=print)
    # 3. export / quantize / save (folder mirrors `yolo export format=openvino`)
    ov_fp32 = export_fp32(spec, model)
    write_ir(spec, ov_fp32, out / "fp32", detector_metadata(spec, "FP32 ..."))
    ov_int8 = quantize_int8(ov_fp32, calib_inputs)      # list of [1, 3, S, S] float32 RGB 0..1
    write_ir(spec, ov_int8, out / "int8", detector_metadata(spec, "INT8 ...", int8=True))
    # 4. evaluate (OpenVINO, numpy): samples as in step 1
    metrics = evaluate_map(out / "int8" / f"{spec.name}.xml", samples, spec)
    files = file_hashes(out, spec.name)

Inputs may be square (``imgsz=320``) or not (``imgsz=(320, 416)``, height then width).
Model: a stride-4 stem, one stage per stride (strides must be 8, 16, 32, ... in order; each
stage a stride-2 conv and ``stage_depth`` 3x3 convs), top-down fusion, one head per level. Output [1, 4 + nc, N]: cx, cy, w, h in input pixels,
then class scores after sigmoid. Each object is assigned to one level by its longer side
(``level_split``: thresholds in input pixels, one fewer than the strides) and claims the
anchors of that level within one stride of its centre (centre prior; with
``centre_inside`` only those also within half a stride of the box, so a thin object's
anchors sit on it); scores are trained towards the box IoU (IoU-aware classification).
Augmentation: the flips the scene allows (``flips``) and optional brightness/contrast
jitter (``photometric``).

Images go in as letterboxed (114 padding, centred, Ultralytics style) RGB CHW uint8.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import os
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from agent.infer.geometry import letterbox
from models.evaluate import compile_ir, decode, mean_average_precision, to_input


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector build varies: classes, input size, strides, objects per image."""

    name: str  # file stem of the IR and the folder name under models/
    names: tuple[str, ...]  # class names, index = class id
    imgsz: int | tuple[int, int] = 320  # square side, or (height, width)
    strides: tuple[int, ...] = (8, 16)
    max_objects: int = 3  # padding size of the per-image target array
    level_split: tuple[float, ...] = (48,)  # longer side (input px) above which an object moves up a level
    widths: tuple[int, ...] = (16, 32, 64, 128)  # stem (2), then one per level
    stage_depth: tuple[int, ...] = ()  # 3x3 convs after each level's stride-2 conv; () = one per level
    centre_inside: bool = False  # positives only on anchors within half a stride of the box too
    flips: tuple[str, ...] = ("h", "v")  # training flips the scene allows: "h" horizontal, "v" vertical
    photometric: float = 0.0  # training brightness gain +-, contrast offset +- a quarter of it
    version: str = "1.0.0"
    extra_metadata: dict = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def hw(self) -> tuple[int, int]:
        """Input (height, width)."""
        return (self.imgsz, self.imgsz) if isinstance(self.imgsz, int) else (int(self.imgsz[0]), int(self.imgsz[1]))

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(self.stage_depth) or (1,) * len(self.strides)

    @property
    def num_anchors(self) -> int:
        h, w = self.hw
        return sum((h // s) * (w // s) for s in self.strides)

    def __post_init__(self):
        if tuple(self.strides) != tuple(8 * 2**i for i in range(len(self.strides))):
            raise ValueError(f"strides must be 8, 16, 32, ... in order, got {self.strides}")
        if len(self.level_split) != len(self.strides) - 1:
            raise ValueError("level_split needs one threshold fewer than strides")
        if len(self.widths) != 2 + len(self.strides):
            raise ValueError("widths: two stem widths, then one per level")
        if len(self.depths) != len(self.strides):
            raise ValueError("stage_depth: one per level")
        if any(side % max(self.strides) for side in self.hw):
            raise ValueError(f"input {self.hw} must be a multiple of the largest stride {max(self.strides)}")
        if set(self.flips) - {"h", "v"}:
            raise ValueError(f"flips: 'h' and/or 'v', got {self.flips}")


# ------------------------------------------------------------------ data


def letterbox_targets(spec: DetectorSpec, samples) -> tuple[np.ndarray, np.ndarray]:
    """samples: iterable of (bgr_image, [(class_id, (x1, y1, x2, y2)), ...]) in frame pixels.

    Returns letterboxed (as the agent's in-graph letterbox does) RGB CHW uint8 images
    [n, 3, H, W] and targets [n, max_objects, 5] (class, x1, y1, x2, y2 in input pixels;
    class -1 = padding).
    """
    samples = list(samples)
    n, (h, w) = len(samples), spec.hw
    images = np.empty((n, 3, h, w), np.uint8)
    targets = np.zeros((n, spec.max_objects, 5), np.float32)
    targets[:, :, 0] = -1
    for i, (image, objects) in enumerate(samples):
        padded, lb = letterbox(image, (h, w))
        images[i] = padded[:, :, ::-1].transpose(2, 0, 1)
        r, left, top = lb.scale, lb.pad_x, lb.pad_y
        for j, (cls, (x1, y1, x2, y2)) in enumerate(list(objects)[: spec.max_objects]):
            targets[i, j] = (cls, x1 * r + left, y1 * r + top, x2 * r + left, y2 * r + top)
    return images, targets


def render_training_set(chunk_fn: Callable, n: int, seed_base: int, chunk: int = 100, workers: int = 1):
    """Calls chunk_fn(seed, count) -> (images, targets) for seeds seed_base, seed_base + 1, ...

    Returns (images, targets, [(seed, count), ...]). chunk_fn must be a module-level
    function when workers > 1 (it runs in worker processes; render before torch starts).
    """
    chunks = [(seed_base + k, min(chunk, n - k * chunk)) for k in range(math.ceil(n / chunk))]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(chunk_fn, *zip(*chunks)))
    else:
        results = [chunk_fn(s, c) for s, c in chunks]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), chunks


# ------------------------------------------------------------------ model


def build_model(spec: DetectorSpec):
    """The torch detector for spec (see the module docstring)."""
    import torch
    from torch import nn

    def conv(c1, c2, k=3, s=1):
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    class Detector(nn.Module):
        """Multi-level anchor-free detector with a YOLOv8-layout output."""

        def __init__(self):
            super().__init__()
            a, b, *lw = spec.widths
            nc = spec.nc
            self.nc = nc
            self.stem = nn.Sequential(conv(3, a, 3, 2), conv(a, b, 3, 2), conv(b, b))  # stride 4
            ins = [b] + lw[:-1]
            self.stages = nn.ModuleList(nn.Sequential(conv(ci, co, 3, 2), *(conv(co, co) for _ in range(depth)))
                                        for ci, co, depth in zip(ins, lw, spec.depths))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuses = nn.ModuleList(nn.Sequential(conv(lw[i] + lw[i + 1], lw[i], 1), conv(lw[i], lw[i]))
                                       for i in range(len(lw) - 1))
            self.heads = nn.ModuleList(nn.Sequential(conv(w, lw[0]), nn.Conv2d(lw[0], 4 + nc, 1)) for w in lw)
            prior = -math.log((1 - 0.01) / 0.01)
            for head in self.heads:
                nn.init.zeros_(head[-1].bias)
                nn.init.normal_(head[-1].weight, std=0.01)
                head[-1].bias.data[4:] = prior
            anchors, strides = [], []
            height, width = spec.hw
            for s in spec.strides:
                gh, gw = height // s, width // s
                ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
                anchors.append(torch.stack([xs, ys], 0).reshape(2, -1).float().add(0.5).mul(s))
                strides.append(torch.full((1, gh * gw), float(s)))
            self.register_buffer("anchors", torch.cat(anchors, 1))  # [2, N] pixel centres
            self.register_buffer("strides", torch.cat(strides, 1))  # [1, N]

        def raw(self, images):
            x = self.stem(images)
            feats = []
            for stage in self.stages:
                x = stage(x)
                feats.append(x)
            fused = [None] * len(feats)
            fused[-1] = feats[-1]
            for i in range(len(feats) - 2, -1, -1):
                fused[i] = self.fuses[i](torch.cat([feats[i], self.up(fused[i + 1])], 1))
            out = torch.cat([head(f).flatten(2) for head, f in zip(self.heads, fused)], 2)
            xy = self.anchors + out[:, :2] * self.strides
            wh = torch.exp(out[:, 2:4].clamp(-6.0, 6.0)) * self.strides
            return torch.cat([xy, wh], 1), out[:, 4:]  # boxes xywh [B, 4, N], class logits [B, nc, N]

        def forward(self, images):
            boxes, logits = self.raw(images)
            return torch.cat([boxes, logits.sigmoid()], 1)

    return Detector()


# ------------------------------------------------------------------ training


def assign(spec: DetectorSpec, model, targets):
    """Centre-prior assignment: each object claims the anchors nearest its box centre.

    targets [B, M, 5] (class, x1, y1, x2, y2; class -1 = padding). Returns positive
    mask [B, N], target boxes xyxy [B, N, 4], target classes [B, N].
    """
    import torch

    ax, ay = model.anchors[0], model.anchors[1]  # [N]
    s = model.strides[0]  # [N]
    cls = targets[..., 0]
    x1, y1, x2, y2 = (targets[..., i, None] for i in range(1, 5))  # [B, M, 1]
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # One level per object, so two levels never both claim it and leave duplicates.
    longest = torch.maximum(w, h)
    level = torch.zeros_like(longest, dtype=torch.long)
    for split in spec.level_split:
        level = level + (longest > split).long()
    level_stride = torch.tensor(spec.strides, dtype=s.dtype)[level]  # [B, M, 1]
    level_ok = s == level_stride
    near = ((ax - cx).abs() <= s + 1e-3) & ((ay - cy).abs() <= s + 1e-3)
    if spec.centre_inside:
        near = near & (ax >= x1 - s / 2) & (ax <= x2 + s / 2) & (ay >= y1 - s / 2) & (ay <= y2 + s / 2)
    pos = near & level_ok & (cls[..., None] >= 0)  # [B, M, N]
    area = torch.where(pos, (w * h).expand_as(pos), torch.full_like(pos, float("inf"), dtype=torch.float32))
    best = area.argmin(1)  # [B, N] smallest claiming object wins
    positive = pos.any(1)
    tgt = torch.gather(targets, 1, best[..., None].expand(-1, -1, 5))  # [B, N, 5]
    return positive, tgt[..., 1:], tgt[..., 0].long()


def giou(a, b):
    import torch

    tl = torch.maximum(a[:, :2], b[:, :2])
    br = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (br - tl).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1) + 1e-7
    return iou - (hull - union) / hull, iou


def detection_loss(spec: DetectorSpec, model, images, targets):
    import torch
    import torch.nn.functional as F

    boxes, logits = model.raw(images)
    positive, tgt_box, tgt_cls = assign(spec, model, targets)
    num_pos = max(int(positive.sum()), 1)
    cls_target = torch.zeros_like(logits)
    b_idx, n_idx = positive.nonzero(as_tuple=True)
    if len(b_idx):
        pb = boxes.permute(0, 2, 1)[b_idx, n_idx]  # xywh
        pb = torch.cat([pb[:, :2] - pb[:, 2:] / 2, pb[:, :2] + pb[:, 2:] / 2], 1)
        tb = tgt_box[b_idx, n_idx]
        g, iou = giou(pb, tb)
        # IoU-aware scores: a loosely placed box from an off-centre anchor scores lower
        # than the well placed one, so it ranks below it and below other images' true hits.
        cls_target[b_idx, tgt_cls[b_idx, n_idx], n_idx] = iou.detach().clamp(0, 1)
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / num_pos
    if len(b_idx):
        stride = model.strides[0, n_idx][:, None]
        box_loss = (1 - g).mean()
        l1_loss = ((pb - tb).abs() / stride).mean()
    else:
        box_loss = l1_loss = boxes.sum() * 0
    return cls_loss + 2.5 * box_loss + 0.5 * l1_loss, (cls_loss.item(), box_loss.item(), l1_loss.item())


def augment(spec: DetectorSpec, images, targets, generator):
    """Random flips of u8 images and their targets (spec.flips; the letterbox padding is symmetric)."""
    import torch

    height, width = spec.hw
    b = images.shape[0]
    images = images.clone()
    t = targets.clone()
    valid = t[..., 0] >= 0
    for axis, dim, lo, hi, size in (("h", 3, 1, 3, width), ("v", 2, 2, 4, height)):
        if axis not in spec.flips:
            continue
        flip = torch.rand(b, generator=generator) < 0.5
        images[flip] = images[flip].flip(dim)
        f = flip[:, None] & valid
        a, c = t[..., lo].clone(), t[..., hi].clone()
        t[..., lo] = torch.where(f, size - c, a)
        t[..., hi] = torch.where(f, size - a, c)
    return images, t


def photometric(x, amount: float, generator):
    """Per-image brightness gain (1 +- amount) and offset (+- amount / 4) on float [0, 1] images, in place."""
    import torch

    b = x.shape[0]
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 2 * amount
    bias = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * amount / 2
    return x.mul_(gain).add_(bias).clamp_(0, 1)


def train(spec: DetectorSpec, images_u8: np.ndarray, targets: np.ndarray, epochs: int, batch: int, lr: float,
          seed: int, log=print, time_budget_s: float | None = None, init_state: dict | None = None):
    """AdamW + warmup/cosine + EMA; returns the EMA model in eval mode.

    time_budget_s (optional): after each epoch the run is re-planned to the epochs that fit in
    the budget at the speed measured so far (at most ``epochs``; see fit_epochs).
    init_state (optional): a state_dict of an earlier run of the same spec to continue from
    (a warm restart: a new warmup and cosine schedule).
    """
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    if init_state is not None:
        model.load_state_dict(init_state)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    images_t = torch.from_numpy(images_u8)
    targets_t = torch.from_numpy(targets)
    n = len(images_t)
    steps_per_epoch = n // batch
    total = steps_per_epoch * epochs
    warmup = min(150, total // 10)
    step = 0
    t0 = time.time()
    epoch, max_epochs = 0, epochs
    while epoch < epochs:
        model.train()
        order = torch.randperm(n, generator=generator)
        running = np.zeros(3)
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            x, y = augment(spec, images_t[idx], targets_t[idx], generator)
            x = x.float().div_(255.0)
            if spec.photometric > 0:
                x = photometric(x, spec.photometric, generator)
            factor = (step + 1) / warmup if step < warmup else \
                0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
            for g in opt.param_groups:
                g["lr"] = lr * factor
            loss, parts = detection_loss(spec, model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            d = 0.998 * (1 - math.exp(-step / 100))
            with torch.no_grad():
                msd = model.state_dict()
                for key, v in ema.state_dict().items():
                    if v.dtype.is_floating_point:
                        v.mul_(d).add_(msd[key].detach(), alpha=1 - d)
                    else:
                        v.copy_(msd[key])
            running += parts
        running /= max(steps_per_epoch, 1)
        epoch += 1
        log(f"epoch {epoch}/{epochs}: cls {running[0]:.3f} giou {running[1]:.3f} l1 {running[2]:.3f} "
            f"lr {lr * factor:.2e} ({time.time() - t0:.0f}s)")
        epochs = fit_epochs(epoch, epochs, time.time() - t0, time_budget_s, max_epochs, log)
        total = steps_per_epoch * epochs
    ema.epochs_run = epoch
    return ema.eval()


def fit_epochs(done: int, planned: int, elapsed: float, budget_s: float | None, cap: int, log=print) -> int:
    """How many epochs a run with a time budget should have, after `done` epochs took `elapsed` s.

    The plan follows the speed measured so far (the machine is shared, so it changes), never
    above `cap` (the epochs asked for) and never below done + 1 while time is left; the caller
    re-plans its cosine schedule to the answer. Past the budget the run stops (returns `done`)."""
    if budget_s is None:
        return planned
    if elapsed >= budget_s:
        if done < planned:
            log(f"time budget {budget_s:.0f}s reached: stopping after epoch {done}")
        return done
    fit = min(cap, max(done + 1, int(budget_s / (elapsed / done))))
    if fit != planned:
        log(f"time budget {budget_s:.0f}s: {fit} epochs fit at {elapsed / done:.0f}s each; schedule re-planned")
    return fit


# ------------------------------------------------------------------ export


def detector_metadata(spec: DetectorSpec, description: str, int8: bool | None = None) -> dict:
    """Ultralytics-style metadata.yaml content (task detect, imgsz, names, stride)."""
    return {
        "description": description,
        "author": "edge-agent",
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "version": spec.version,
        "license": "Apache-2.0",
        "stride": max(spec.strides),
        "task": "detect",
        "batch": 1,
        "imgsz": list(spec.hw),
        "names": {i: k for i, k in enumerate(spec.names)},
        "args": {"format": "openvino", "int8": ("int8" in description.lower()) if int8 is None else bool(int8)},
        **spec.extra_metadata,
    }


def write_ir(name: str | DetectorSpec, ov_model, out_dir: Path, meta: dict, compress_to_fp16: bool = False) -> Path:
    """Save <out_dir>/<name>.{xml,bin} and metadata.yaml; returns the .xml path."""
    import openvino as ov
    import yaml

    name = name.name if isinstance(name, DetectorSpec) else name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{name}.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=compress_to_fp16)
    with open(out_dir / "metadata.yaml", "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    return xml


def export_fp32(spec: DetectorSpec, model):
    """torch -> OpenVINO model via openvino.convert_model; input `images`, output `output0`."""
    import openvino as ov
    import torch

    h, w = spec.hw
    model = model.eval()
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=torch.zeros(1, 3, h, w), input=[1, 3, h, w])
    ov_model.inputs[0].get_tensor().set_names({"images"})
    ov_model.outputs[0].get_tensor().set_names({"output0"})
    return ov_model


def head_output_convolutions(ov_model, nc: int) -> list[str]:
    """Names of the last convolution of each head (4 + nc output channels: boxes and class logits)."""
    return [op.get_friendly_name() for op in ov_model.get_ops() if op.get_type_name() == "Convolution"
            and op.get_output_partial_shape(0)[1].is_static and op.get_output_partial_shape(0)[1].get_length() == 4 + nc]


def quantize_int8(ov_model, calib_inputs, ignored_types=("Sigmoid", "Exp", "Multiply", "Add", "Concat", "Clamp"),
                  keep_float: Sequence[str] = ()):
    """NNCF post-training INT8 of the convolutions, min/max activation ranges.

    calib_inputs: list of model inputs ([1, 3, H, W] float32 RGB 0..1, see input_tensor).
    keep_float: names of further operations to leave in float (e.g. head_output_convolutions:
    the box regression loses localisation precision in INT8, which mAP@0.5:0.95 shows).
    """
    import nncf

    # Only the convolutions are quantized; the box decode and sigmoid stay in float,
    # as Ultralytics' own OpenVINO INT8 export does for its detect head.
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ignored = nncf.IgnoredScope(types=list(ignored_types), names=list(keep_float), validate=False)
    # Rare objects cause rare large activations (in inspection most calibration parts are
    # good). The default estimator averages per-image extremes and clips them (boxes shrank
    # by a third and mAP@0.5 fell from 0.88 to 0.51 in the first inspection build); plain
    # min/max keeps them.
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    return nncf.quantize(ov_model, nncf.Dataset(calib_inputs), subset_size=len(calib_inputs),
                         preset=nncf.QuantizationPreset.MIXED, ignored_scope=ignored, advanced_parameters=advanced)


# ------------------------------------------------------------------ evaluation


def input_tensor(spec: DetectorSpec, image: np.ndarray) -> np.ndarray:
    """u8 BGR frame -> the model input [1, 3, H, W] float32 RGB 0..1, letterboxed (calibration)."""
    return to_input(letterbox(image, spec.hw)[0])


def evaluate_map(ir_path, samples, spec: DetectorSpec, conf: float = 0.001, iou: float = 0.6) -> dict:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP@0.5 of an IR on samples (see letterbox_targets).

    Boxes are decoded with models/evaluate.py and mapped back to frame pixels.
    """
    compiled = compile_ir(ir_path)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    detections, ground_truth = [], []
    for image, objects in samples:
        padded, lb = letterbox(image, spec.hw)
        raw = request.infer({0: to_input(padded)})[output]
        boxes, scores, classes = decode(raw, conf, iou)
        detections.append((lb.to_source(boxes, image.shape[1], image.shape[0]), scores, classes))
        objects = list(objects)
        ground_truth.append((np.array([b for _, b in objects], np.float32).reshape(-1, 4), None,
                             np.array([c for c, _ in objects], np.int64)))
    result = mean_average_precision(detections, ground_truth, spec.nc, names=spec.names)
    result["images"] = len(detections)
    result["objects"] = int(sum(len(g[2]) for g in ground_truth))
    return result


def measure_latency(ir_path, shape, runs: int = 200, warmup: int = 20) -> dict:
    """Synchronous latency on CPU with the LATENCY hint, in milliseconds, for an input shape."""
    compiled = compile_ir(ir_path, "LATENCY")
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)
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


def benchmark_app_fps(out: Path, name: str, seconds: int = 10, subdirs: Sequence[str] = ("fp32", "int8"),
                      shape: str | None = None) -> dict:
    """OpenVINO's own benchmark_app throughput (CPU, THROUGHPUT hint) of each IR under out, in FPS.

    shape: benchmark_app's -shape for a dynamic input (a classifier: "[1,3,96,96]").
    The INT8 / FP32 ratio goes on the card; absolute figures move with the load on the machine.
    Both run with -infer_precision f32 (layers that are not quantised in f32): a CPU with AVX-512
    BF16 or AMX would otherwise run the FP32 IR in bf16."""
    import re
    import subprocess
    import sys

    tool = Path(sys.executable).with_name("benchmark_app")
    result = {}
    for sub in subdirs:
        xml = Path(out) / sub / f"{name}.xml"
        cmd = [str(tool), "-m", str(xml), "-d", "CPU", "-hint", "throughput", "-t", str(seconds), "-infer_precision", "f32"]
        run = subprocess.run(cmd + (["-shape", shape] if shape else []), capture_output=True, text=True,
                             timeout=seconds * 10 + 120)
        found = re.search(r"Throughput:\s+([0-9.]+)\s*FPS", run.stdout)
        if run.returncode != 0 or not found:
            raise RuntimeError(f"benchmark_app failed on {xml}: {run.stderr.strip()[-500:] or run.stdout[-500:]}")
        result[sub] = float(found.group(1))
    return result


def throughput_md(card: dict, what: str = "") -> str:
    """The CARD.md sentence with benchmark_app's INT8 and FP32 throughput (benchmark_app_fps)."""
    b = card.get("benchmark_app_fps")
    figures = f"INT8 {b['int8']:.0f} FPS, FP32 {b['fp32']:.0f} FPS, {b['int8'] / b['fp32']:.2f}x" if b else "not measured"
    return (f"INT8 / FP32 throughput{what} (`benchmark_app -hint throughput -t 10 -infer_precision f32`, same "
            f"machine): {figures}.")


def measured_on() -> str:
    """The CPU, its core count and OpenVINO's version, for a card's speed figures."""
    import platform

    import openvino as ov

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    capabilities = " ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return (f"{cpu} ({platform.machine()}, OpenVINO capabilities {capabilities}), {os.cpu_count()} CPUs, openvino "
            f"{ov.__version__}; layers that are not quantised in f32")


# ------------------------------------------------------------------ files and cards


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(out: Path, name: str, subdirs: Sequence[str] = ("fp32", "int8")) -> dict:
    """{"fp32/<name>.xml": {"bytes", "sha256"}, ...} for the IR files under out."""
    files = {}
    for sub in subdirs:
        for ext in ("xml", "bin"):
            p = Path(out) / sub / f"{name}.{ext}"
            files[f"{sub}/{p.name}"] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
    return files


def files_table(files: dict) -> list[str]:
    """Markdown lines of a file / bytes / sha256 table."""
    lines = ["| file | bytes | sha256 |", "|---|---|---|"]
    for name, info in files.items():
        lines.append(f"| {name} | {info['bytes']} | `{info['sha256']}` |")
    return lines


def rebuild_args(argv: Sequence[str], drop: Sequence[str] = ("--out", "--det-save")) -> str:
    """The command-line options of a build as a card's rebuild command should show them: without
    the options that only say where this run wrote (the rebuild writes to the default folders)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in drop:
            skip = True
        elif not any(a.startswith(d + "=") for d in drop):
            kept.append(a)
    return (" " + " ".join(kept)) if kept else ""


REBUILD_NOTE = ("Training is seeded, but CPU kernels are not bit-exact across machines: a rebuild gives close "
                "metrics, not identical bytes.")


def files_and_rebuild_md(card: dict) -> list[str]:
    """The Files (bytes, sha256) and Rebuild (command) sections of a CARD.md."""
    return ["## Files", "", *files_table(card["files"]), "", "## Rebuild", "", "```", card["rebuild_command"], "```", ""]


def map_table_md(fp: dict, q: dict, classes: Sequence[str] = ()) -> list[str]:
    """CARD.md table head and mAP rows, FP32 beside INT8 (evaluate_map results), per-class AP@0.5 for `classes`."""
    lines = ["| | FP32 | INT8 |", "|---|---|---|",
             f"| mAP@0.5 | {fp['map50']:.4f} | {q['map50']:.4f} |",
             f"| mAP@0.5:0.95 | {fp['map50_95']:.4f} | {q['map50_95']:.4f} |"]
    for k in classes:
        lines.append(f"| AP@0.5 {k} | {fp['ap50_per_class'].get(k, float('nan')):.4f} | "
                     f"{q['ap50_per_class'].get(k, float('nan')):.4f} |")
    return lines


def write_card_json(out: Path, card: dict) -> None:
    with open(Path(out) / "card.json", "w") as f:
        json.dump(card, f, indent=2)


def write_card_md(out: Path, lines: Sequence[str]) -> None:
    (Path(out) / "CARD.md").write_text("\n".join(lines) + ("\n" if lines and lines[-1] != "" else ""))


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
