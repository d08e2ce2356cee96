"""Shared pieces for building small CNN crop classifiers that the agent's ``Classifier`` runs.

Used by ``models/build_severity.py`` and ``models/build_checkout.py`` (and meant to be
imported by other build scripts):

    from models.classifier_lib import ClassifierSpec, cascade_crop, resize_crops, train, export_fp32, \
        quantize_int8, write_ir, classifier_metadata, evaluate_top1, measure_latency, file_hashes, write_card

    spec = ClassifierSpec(name="my-classifier", names=("a", "b"), imgsz=64)
    crop = cascade_crop(frame_bgr, box, rng=rng, jitter=0.1, policy=spec.crop)  # cut as agent/infer/cascade.py will
    x = resize_crops(spec, crops)           # u8 BGR [n, S, S, 3], cv2.resize INTER_LINEAR like the agent
    model = train(spec, x, labels, epochs=12, batch=64, lr=3e-3, seed=0, log=print,
                  augment=dict(hflip=True, vflip=True, rot90=True, color=0.1))
    ov_fp32 = export_fp32(spec, model)      # input `images` [N, 3, S, S] float RGB 0..1, output `logits` [N, nc]
    write_ir(spec.name, ov_fp32, out / "fp32", classifier_metadata(spec, "FP32 ...", int8=False))
    ov_int8 = quantize_int8(ov_fp32, x_calib)          # u8 BGR crops as from resize_crops
    write_ir(spec.name, ov_int8, out / "int8", classifier_metadata(spec, "INT8 ...", int8=True))
    metrics = evaluate_top1(out / "int8" / f"{spec.name}.xml", x_eval, y_eval, spec)
    write_card(out, card)                   # card.json + CARD.md (see write_card for the keys)

The IR contract matches ``agent.infer.engine.Classifier``: the agent resizes each u8 BGR
crop with cv2 (INTER_LINEAR) to the input size, then the graph's PrePostProcessor does
BGR->RGB and /255; so the IR itself takes [N, 3, S, S] float32 RGB in [0, 1] (dynamic
batch) and returns [N, classes] logits. ``to_input`` reproduces that preprocessing in numpy.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from agent.infer.geometry import CropPolicy
from models.detector_lib import REBUILD_NOTE, file_hashes, files_and_rebuild_md, files_table, fit_epochs, \
    measure_latency, sha256, utc_now, write_card_json, write_card_md, write_ir  # noqa: F401  (re-exported)

DEFAULT_CROP = CropPolicy()  # what agent/infer/cascade.py does for a model without a `crop` entry


@dataclass(frozen=True)
class ClassifierSpec:
    name: str  # file stem of the IR and folder name under models/
    names: tuple[str, ...]  # class names, index = class id
    imgsz: int = 64  # square input
    widths: tuple[int, ...] = (24, 48, 96, 160)  # one per stride-2 stage
    version: str = "1.0.0"
    extra_metadata: dict = field(default_factory=dict)
    crop: CropPolicy = DEFAULT_CROP  # how the agent's cascade cuts this model's crops (metadata.yaml `crop`)

    @property
    def nc(self) -> int:
        return len(self.names)


# ------------------------------------------------------------------ crops


def jitter_box(box, rng: np.random.Generator, jitter: float, px: float = 2.0):
    """Each side moved by up to jitter x the box side (+- px pixels): a detector-like box."""
    x1, y1, x2, y2 = map(float, box)
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-1, 1, 4) * np.array([w, h, w, h]) * jitter + rng.uniform(-px, px, 4)
    nx1, ny1, nx2, ny2 = x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3]
    if nx2 - nx1 < 4:
        nx1, nx2 = x1, x2
    if ny2 - ny1 < 4:
        ny1, ny2 = y1, y2
    return nx1, ny1, nx2, ny2


def cascade_crop(image: np.ndarray, box, rng: np.random.Generator | None = None, jitter: float = 0.0,
                 policy: CropPolicy = DEFAULT_CROP) -> np.ndarray:
    """Crop of image around box exactly as the agent's cascade cuts it for a model with this crop
    policy (agent.infer.geometry.CropPolicy, the same code), after optional detector-like jitter."""
    if rng is not None and jitter > 0:
        box = jitter_box(box, rng, jitter)
    return policy.cut(image, box)


def describe_crop(crop: dict) -> str:
    """One sentence for a card: how the agent's cascade cuts this model's crops."""
    policy = CropPolicy.from_metadata({"crop": crop})
    if policy.mode == "context":
        return (f"metadata.yaml `crop: {{mode: context, size: {policy.size}}}`: `agent/infer/cascade.py` cuts a fixed "
                f"{policy.size} x {policy.size} window of source pixels centred on the detector box (moved inside "
                "the frame), so the model sees objects at one pixel scale.")
    return (f"metadata.yaml `crop: {{mode: box, margin: {policy.margin}, min_size: {policy.min_size}}}`: "
            f"`agent/infer/cascade.py` grows the detector box by {policy.margin} px (at least {policy.min_size} px) "
            "and the crop is stretched to the input.")


def resize_crops(spec: ClassifierSpec, crops: Sequence[np.ndarray]) -> np.ndarray:
    """u8 BGR crops -> u8 BGR [n, S, S, 3], resized as agent.infer.engine.Classifier does."""
    import cv2

    s = spec.imgsz
    out = np.empty((len(crops), s, s, 3), np.uint8)
    for i, c in enumerate(crops):
        out[i] = cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR)
    return out


def to_input(batch_bgr_u8: np.ndarray) -> np.ndarray:
    """[n, S, S, 3] u8 BGR -> [n, 3, S, S] float32 RGB in [0, 1] (the agent's in-graph preprocessing)."""
    rgb = batch_bgr_u8[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(255.0)


# ------------------------------------------------------------------ model


def build_model(spec: ClassifierSpec):
    """Plain CNN: per stage a stride-2 conv and a residual conv pair; global average pool; linear."""
    import torch
    from torch import nn

    def conv(c1, c2, k=3, s=1):
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a = conv(c, c)
            self.b = conv(c, c)

        def forward(self, x):
            return x + self.b(self.a(x))

    class CropClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for w in spec.widths:
                layers += [conv(c, w, 3, 2), Block(w)]
                c = w
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(c, spec.nc)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    return CropClassifier()


# ------------------------------------------------------------------ training


def _augment(x, generator, hflip: bool, vflip: bool, rot90: bool, color: float):
    """x float [B, 3, S, S] in 0..1."""
    import torch

    b = x.shape[0]
    if hflip:
        m = torch.rand(b, generator=generator) < 0.5
        x[m] = x[m].flip(3)
    if vflip:
        m = torch.rand(b, generator=generator) < 0.5
        x[m] = x[m].flip(2)
    if rot90:
        m = torch.rand(b, generator=generator) < 0.5
        x[m] = x[m].transpose(2, 3)
    if color > 0:
        gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * color
        bias = (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * color * 0.5
        x = (x * gain + bias).clamp(0, 1)
    return x


def train(spec: ClassifierSpec, x_u8: np.ndarray, labels: np.ndarray, epochs: int, batch: int, lr: float,
          seed: int, log=print, augment: dict | None = None, label_smoothing: float = 0.05,
          time_budget_s: float | None = None):
    """x_u8: [n, S, S, 3] u8 BGR (resize_crops). Returns the EMA model in eval mode.

    time_budget_s: as in detector_lib.train (the epochs are cut to what fits, schedule re-planned)."""
    import torch
    import torch.nn.functional as F

    aug = dict(hflip=True, vflip=True, rot90=True, color=0.1)
    aug.update(augment or {})
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    # Stored as RGB CHW u8, converted per batch.
    images = torch.from_numpy(np.ascontiguousarray(x_u8[..., ::-1].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    n = len(images)
    steps_per_epoch = max(n // batch, 1)
    total = steps_per_epoch * epochs
    warmup = min(100, total // 10)
    step = 0
    t0 = time.time()
    epoch, max_epochs = 0, epochs
    while epoch < epochs:
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            xb = _augment(images[idx].float().div_(255.0), generator, **aug)
            yb = y[idx]
            factor = (step + 1) / warmup if step < warmup else \
                0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
            for g in opt.param_groups:
                g["lr"] = lr * factor
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
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
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        epoch += 1
        log(f"epoch {epoch}/{epochs}: loss {loss_sum / seen:.4f} train acc {correct / seen:.4f} "
            f"lr {lr * factor:.2e} ({time.time() - t0:.0f}s)")
        epochs = fit_epochs(epoch, epochs, time.time() - t0, time_budget_s, max_epochs, log)
        total = steps_per_epoch * epochs
    ema.epochs_run = epoch
    return ema.eval()


def torch_top1(model, x_u8: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Quick top-1 of a torch model on u8 BGR crops (for logging during a build)."""
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = torch.from_numpy(to_input(x_u8[i : i + batch]))
            correct += int((model(xb).argmax(1).numpy() == labels[i : i + batch]).sum())
    return correct / max(len(x_u8), 1)


# ------------------------------------------------------------------ export


def export_fp32(spec: ClassifierSpec, model):
    """torch -> OpenVINO via openvino.convert_model: input `images` [?, 3, S, S], output `logits`."""
    import openvino as ov
    import torch

    s = spec.imgsz
    model = model.eval()
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=torch.zeros(1, 3, s, s), input=[-1, 3, s, s])
    ov_model.inputs[0].get_tensor().set_names({"images"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def quantize_int8(ov_model, calib_u8: np.ndarray, batch: int = 1):
    """NNCF post-training INT8 (min/max activation ranges, as the detectors use).

    calib_u8: [n, S, S, 3] u8 BGR crops (resize_crops); they are fed as the agent feeds them.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    items = [to_input(calib_u8[i : i + batch]) for i in range(0, len(calib_u8), batch)]
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items),
                         preset=nncf.QuantizationPreset.MIXED, advanced_parameters=advanced)


def classifier_metadata(spec: ClassifierSpec, description: str, int8: bool) -> dict:
    """metadata.yaml content: task classify, imgsz, names."""
    return {
        "description": description,
        "author": "edge-agent",
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "version": spec.version,
        "license": "Apache-2.0",
        "task": "classify",
        "batch": 1,
        "imgsz": [spec.imgsz, spec.imgsz],
        "names": {i: k for i, k in enumerate(spec.names)},
        "crop": spec.crop.as_metadata(),
        "args": {"format": "openvino", "int8": bool(int8)},
        **spec.extra_metadata,
    }


# ------------------------------------------------------------------ evaluation


def predict(ir_path, x_u8: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of an IR on u8 BGR crops [n, S, S, 3] (preprocessed as the agent does)."""
    from models.evaluate import compile_ir

    compiled = compile_ir(ir_path)
    request = compiled.create_infer_request()
    outs = []
    for i in range(0, len(x_u8), batch):
        outs.append(np.array(request.infer({0: to_input(x_u8[i : i + batch])})[compiled.output(0)]))
    return np.concatenate(outs)


def evaluate_top1(ir_path, x_u8: np.ndarray, labels: np.ndarray, spec: ClassifierSpec) -> dict:
    """top-1, per-class accuracy and the confusion matrix (rows = truth, columns = prediction)."""
    labels = np.asarray(labels)
    pred = predict(ir_path, x_u8).argmax(1)
    cm = np.zeros((spec.nc, spec.nc), np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class = {spec.names[c]: (float(cm[c, c] / cm[c].sum()) if cm[c].sum() else None) for c in range(spec.nc)}
    return {"top1": float((pred == labels).mean()), "crops": int(len(labels)), "correct": int((pred == labels).sum()),
            "per_class_top1": per_class, "confusion": cm.tolist()}


# ------------------------------------------------------------------ card


def write_card(out: Path, card: dict, extra_md: Sequence[str] = ()) -> None:
    """card.json and CARD.md for a classifier.

    Expected keys: name, version, summary, classes, class_descriptions (optional dict
    name -> description), input_size, parameters, training (dict with crops, renderer_seeds,
    epochs, batch, lr, torch_seed, threads, seconds, notes), calibration (crops, renderer_seed),
    evaluation (crops, renderer_seed), metrics (fp32, int8: evaluate_top1 results;
    latency: {fp32, int8}), measured_on, files, rebuild_command, build_seconds, test.
    """
    write_card_json(out, card)
    m = card["metrics"]
    fp, q = m["fp32"], m["int8"]
    s = card["input_size"]
    desc = card.get("class_descriptions") or {}
    t = card["training"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        card["summary"],
        "",
        "## Interface",
        "",
        f"- Classes ({len(card['classes'])}): " + ", ".join(
            f"{i} = {k}" + (f" ({desc[k]})" if k in desc else "") for i, k in enumerate(card["classes"])),
        f"- Input `images`: [N, 3, {s}, {s}] float32 RGB in [0, 1] (dynamic batch). The agent's "
        "`Classifier` resizes each u8 BGR crop with cv2 (INTER_LINEAR, no letterbox) and the graph "
        "does BGR->RGB and /255.",
        f"- Output `logits`: [N, {len(card['classes'])}] logits (the agent applies softmax).",
        f"- Crops: {describe_crop(card['input'].get('crop') or DEFAULT_CROP.as_metadata())}",
        f"- Small CNN, {card['parameters']:,} parameters.",
        "",
        "## Training data",
        "",
        f"- {t['crops']} crops from renderer seeds {t['renderer_seeds'][0]}..{t['renderer_seeds'][1]}. {t.get('notes', '')}",
        f"- {t['epochs']} epochs, batch {t['batch']}, AdamW lr {t['lr']}, label smoothing 0.05, EMA; "
        f"torch seed {t['torch_seed']}; {t['seconds']:.0f} s for rendering + training on {t['threads']} CPU thread(s) (shared 2-core box).",
        f"- INT8: NNCF post-training quantization, {card['calibration']['crops']} calibration crops "
        f"(renderer seed {card['calibration']['renderer_seed']}), min/max activation ranges.",
        "",
        f"## Metrics (held-out crops, renderer seed {card['evaluation']['renderer_seed']}, {fp['crops']} crops)",
        "",
        "| | FP32 | INT8 |",
        "|---|---|---|",
        f"| top-1 | {fp['top1']:.4f} | {q['top1']:.4f} |",
        f"| errors | {fp['crops'] - fp['correct']} | {q['crops'] - q['correct']} |",
    ]
    for k in card["classes"]:
        a, b = fp["per_class_top1"].get(k), q["per_class_top1"].get(k)
        lines.append(f"| top-1 {k} | {'n/a' if a is None else f'{a:.4f}'} | {'n/a' if b is None else f'{b:.4f}'} |")
    lines += [
        f"| latency median ms, batch 1 (CPU, LATENCY hint) | {m['latency']['fp32']['median_ms']:.2f} | "
        f"{m['latency']['int8']['median_ms']:.2f} |",
    ]
    fps = card.get("benchmark_app_fps")
    if fps:
        lines.append(f"| throughput FPS, batch 1 (`benchmark_app -hint throughput -infer_precision f32`) | {fps['fp32']:.0f} | "
                     f"{fps['int8']:.0f} ({fps['int8'] / fps['fp32']:.2f}x) |")
    lines += [
        "",
        f"Latency measured on: {card['measured_on']} (shared machine; treat as indicative).",
        "",
        "Confusion matrix, INT8 (rows = truth, columns = prediction; only classes with errors shown"
        " if more than 6 classes):",
        "",
    ]
    cm = np.array(q["confusion"])
    names = list(card["classes"])
    show = list(range(len(names)))
    if len(names) > 6:
        off = cm - np.diag(np.diag(cm))
        show = [i for i in range(len(names)) if off[i].sum() or off[:, i].sum()]
    if show:
        lines.append("| truth \\ pred | " + " | ".join(names[i] for i in show) + " |")
        lines.append("|---" * (len(show) + 1) + "|")
        for i in show:
            lines.append(f"| {names[i]} | " + " | ".join(str(cm[i, j]) for j in show) + " |")
    else:
        lines.append("(no errors)")
    lines += ["", *extra_md, "", *files_and_rebuild_md(card),
              f"Build time: {card['build_seconds'] / 60:.1f} min. {REBUILD_NOTE}", "",
              "## Limits", "",
              "- Trained on simulator renders only; it has never seen a real camera image.",
              f"- {card.get('test', '')}", ""]
    write_card_md(out, lines)
