"""Build the self-checkout models from the checkout simulator.

    .venv/bin/python models/build_checkout.py                 # both models
    .venv/bin/python models/build_checkout.py --only detector
    .venv/bin/python models/build_checkout.py --only products

* ``models/checkout-detector/``: one-class (``product``) anchor-free detector, imgsz 320,
  YOLOv8 output layout [1, 5, N], trained on ``hw_sim.checkout_scene.CheckoutRenderer``
  scenes (models/detector_lib.py).
* ``models/checkout-products/``: crop classifier, product crop -> one of the 30 skus of
  ``hw_sim.products.CATALOG`` (names = skus), crops cut from ground-truth boxes the way
  the agent's cascade cuts them from detector boxes, with box jitter (models/classifier_lib.py).

Each folder: fp32/ and int8/ (<name>.xml, .bin, metadata.yaml), card.json, CARD.md.

Seeds (renderer seeds; none overlap): detector training 11000+, calibration 12000,
evaluation 13000; classifier training 14000+, calibration 15000, evaluation 16000;
tests/test_model_accuracy_checkout.py uses 19000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import models.classifier_lib as clib  # noqa: E402
import models.detector_lib as dlib  # noqa: E402
from hw_sim.checkout_scene import CheckoutRenderer  # noqa: E402
from hw_sim.products import CATALOG  # noqa: E402
from models.evaluate import preprocess  # noqa: E402

DET_NAME = "checkout-detector"
CLS_NAME = "checkout-products"
VERSION = "1.0.0"
DET_TRAIN_SEED_BASE, DET_CALIB_SEED, DET_EVAL_SEED = 11000, 12000, 13000
CLS_TRAIN_SEED_BASE, CLS_CALIB_SEED, CLS_EVAL_SEED = 14000, 15000, 16000
TEST_SEED = 19000  # reserved for tests/test_model_accuracy_checkout.py
CHUNK = 100  # renders per renderer seed (the platter and counter are fixed per seed)
BOX_JITTER = 0.08  # classifier crops: each side moves up to 8 % of the box side (+-2 px)

DET_SPEC = dlib.DetectorSpec(name=DET_NAME, names=("product",), imgsz=320, strides=(8, 16, 32), max_objects=3,
                             level_split=(32, 80), widths=(16, 32, 64, 96, 128), version=VERSION)
CLS_SPEC = clib.ClassifierSpec(name=CLS_NAME, names=tuple(p.sku for p in CATALOG), imgsz=64,
                               widths=(32, 64, 96, 160), version=VERSION)


# ------------------------------------------------------------------ data


def scene_samples(seed: int, n: int):
    """n scenes from one renderer seed as (bgr_image, [(0, box), ...])."""
    renderer = CheckoutRenderer(seed=seed)
    out = []
    for _ in range(n):
        scene = renderer.render()
        out.append((scene.image, [(0, it.box) for it in scene.items]))
    return out


def _det_chunk(seed: int, n: int):
    import cv2

    cv2.setNumThreads(1)
    return dlib.letterbox_targets(DET_SPEC, scene_samples(seed, n))


def product_crops(seed: int, n_scenes: int, jitter: float, rng_seed: int):
    """Crops (u8 BGR, cascade-cut, jittered) and sku indices from n_scenes scenes of one seed."""
    renderer = CheckoutRenderer(seed=seed)
    rng = np.random.default_rng(rng_seed)
    index = {sku: i for i, sku in enumerate(CLS_SPEC.names)}
    crops, labels = [], []
    for _ in range(n_scenes):
        scene = renderer.render()
        for it in scene.items:
            crops.append(clib.cascade_crop(scene.image, it.box, rng, jitter))
            labels.append(index[it.sku])
    return crops, np.array(labels, np.int64)


def crop_set(seed_base: int, n_scenes: int, jitter: float, chunk: int = CHUNK):
    xs, ys, seeds = [], [], []
    for k in range(int(np.ceil(n_scenes / chunk))):
        seed = seed_base + k
        crops, labels = product_crops(seed, min(chunk, n_scenes - k * chunk), jitter, rng_seed=seed)
        xs.append(clib.resize_crops(CLS_SPEC, crops))
        ys.append(labels)
        seeds.append(seed)
    return np.concatenate(xs), np.concatenate(ys), seeds


# ------------------------------------------------------------------ detector


def build_detector(args, log) -> dict:
    started = time.time()
    out = args.out_root / DET_NAME
    log(f"[detector] rendering {args.det_train_images} training scenes (seeds {DET_TRAIN_SEED_BASE}+)")
    images, targets, chunks = dlib.render_training_set(_det_chunk, args.det_train_images, DET_TRAIN_SEED_BASE,
                                                       CHUNK, workers=1)
    log(f"[detector] rendered; {int((targets[..., 0] >= 0).sum())} products in {len(images)} images")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    model = dlib.train(DET_SPEC, images, targets, args.det_epochs, args.det_batch, args.det_lr, args.seed, log,
                       time_budget_s=args.det_budget)
    train_seconds = time.time() - started
    epochs_run = getattr(model, "epochs_run", args.det_epochs)
    del images, targets

    ov_fp32 = dlib.export_fp32(DET_SPEC, model)
    dlib.write_ir(DET_SPEC, ov_fp32, out / "fp32",
                  dlib.detector_metadata(DET_SPEC, f"{DET_NAME} FP32: products on the self-checkout scale", False))
    calib = [preprocess(img)[0] for img, _ in scene_samples(DET_CALIB_SEED, args.det_calib_images)]
    ov_int8 = dlib.quantize_int8(ov_fp32, calib)
    dlib.write_ir(DET_SPEC, ov_int8, out / "int8",
                  dlib.detector_metadata(DET_SPEC, f"{DET_NAME} INT8: products on the self-checkout scale", True))
    log("[detector] saved IRs; evaluating")

    held_out = scene_samples(DET_EVAL_SEED, args.det_eval_images)
    metrics = {}
    for name in ("fp32", "int8"):
        metrics[name] = r = dlib.evaluate_map(out / name / f"{DET_NAME}.xml", held_out, DET_SPEC)
        log(f"[detector] {name}: mAP50 {r['map50']:.4f} mAP50-95 {r['map50_95']:.4f} ({r['objects']} products)")
    metrics["latency"] = {n: dlib.measure_latency(out / n / f"{DET_NAME}.xml", (1, 3, 320, 320))
                          for n in ("fp32", "int8")}
    files = dlib.file_hashes(out, DET_NAME)
    card = {
        "name": DET_NAME, "version": VERSION, "date": dlib.utc_now(), "task": "detect",
        "classes": list(DET_SPEC.names),
        "input": {"name": "images", "shape": [1, 3, 320, 320], "layout": "NCHW", "colour": "RGB", "scale": "0..1",
                  "letterbox_pad": 114},
        "output": {"name": "output0", "layout": "[1, 4 + nc, N]: cx, cy, w, h (input pixels), class scores (sigmoid)"},
        "num_anchors": DET_SPEC.num_anchors, "strides": list(DET_SPEC.strides),
        "level_split": list(DET_SPEC.level_split),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"images": args.det_train_images, "renderer_seeds": [chunks[0][0], chunks[-1][0]],
                     "renders_per_seed": CHUNK, "epochs": epochs_run, "epochs_planned": args.det_epochs,
                     "batch": args.det_batch, "lr": args.det_lr, "torch_seed": args.seed, "threads": args.threads,
                     "seconds": round(train_seconds, 1)},
        "calibration": {"images": args.det_calib_images, "renderer_seed": DET_CALIB_SEED},
        "evaluation": {"images": args.det_eval_images, "renderer_seed": DET_EVAL_SEED, "nms_iou": 0.6,
                       "map_conf": 0.001},
        "metrics": metrics, "benchmark_app_fps": dlib.benchmark_app_fps(out, DET_NAME),
        "measured_on": dlib.measured_on(), "files": files,
        "rebuild_command": rebuild_command(args, "detector"),
        "build_seconds": round(time.time() - started, 1), "test_seed": TEST_SEED,
    }
    write_detector_card(out, card)
    log(f"[detector] wrote {out / 'CARD.md'}")
    return card


def write_detector_card(out: Path, card: dict) -> None:
    dlib.write_card_json(out, card)
    m = card["metrics"]
    fp, q = m["fp32"], m["int8"]
    t = card["training"]
    lines = [
        f"# {DET_NAME} {card['version']}",
        "",
        "Product detector for the self-checkout scale, trained only on renders from",
        "`hw_sim.checkout_scene.CheckoutRenderer`. One class: every product is `product`; the identity",
        f"comes from the `{CLS_NAME}` classifier in the cascade. The shipped model is the INT8 IR.",
        "",
        "## Interface",
        "",
        "- Classes: 0 = product",
        "- Input `images`: [1, 3, 320, 320] float32 RGB in [0, 1], letterboxed keeping aspect, padded with 114 "
        "(centred, Ultralytics style); the agent does this in-graph from a u8 BGR frame.",
        f"- Output `output0`: [1, 5, {card['num_anchors']}] (YOLOv8 detect layout): rows 0-3 box centre-x, "
        "centre-y, width, height in input pixels; row 4 the score after sigmoid. Needs NMS downstream.",
        f"- Anchor-free, strides {card['strides']} (objects longer than {card['level_split']} input px move up "
        f"a level), {card['parameters']:,} parameters.",
        "",
        "## Training data",
        "",
        f"- {t['images']} scenes at 640x480 (1-3 products, hands, blur, light changes), renderer seeds "
        f"{t['renderer_seeds'][0]}..{t['renderer_seeds'][1]} ({CHUNK} per seed; the platter/counter differ per seed).",
        f"- {t['epochs']} epochs (planned {t['epochs_planned']}), batch {t['batch']}, AdamW lr {t['lr']}, flips, EMA; "
        f"torch seed {t['torch_seed']}; {t['seconds']:.0f} s for rendering + training on {t['threads']} CPU thread(s) (shared 2-core box).",
        f"- INT8: NNCF post-training quantization, {card['calibration']['images']} calibration scenes "
        f"(renderer seed {DET_CALIB_SEED}), convolutions only, min/max activation ranges.",
        "",
        f"## Metrics (held-out scenes, renderer seed {DET_EVAL_SEED}, {fp['images']} scenes, {fp['objects']} products)",
        "",
        *dlib.map_table_md(fp, q),
        f"| latency median ms (CPU, LATENCY hint) | {m['latency']['fp32']['median_ms']:.2f} | "
        f"{m['latency']['int8']['median_ms']:.2f} |",
        "",
        dlib.throughput_md(card),
        "",
        f"mAP uses conf >= 0.001, NMS IoU 0.6, COCO 101-point AP (models/evaluate.py). "
        f"Latency measured on: {card['measured_on']} (shared machine; treat as indicative). "
        f"Build time: {card['build_seconds'] / 60:.1f} min.",
        "",
        *dlib.files_and_rebuild_md(card),
        dlib.REBUILD_NOTE,
        "",
        "## Limits",
        "",
        "- Trained on simulator renders only; it has never seen a real camera image.",
        f"- `tests/test_model_accuracy_checkout.py` re-checks the shipped IRs through the agent's `Detector` "
        f"on renderer seed {TEST_SEED}.",
        "",
    ]
    dlib.write_card_md(out, lines)


# ------------------------------------------------------------------ classifier


def build_products(args, log) -> dict:
    started = time.time()
    out = args.out_root / CLS_NAME
    log(f"[products] rendering {args.cls_train_scenes} training scenes (seeds {CLS_TRAIN_SEED_BASE}+)")
    x, y, seeds = crop_set(CLS_TRAIN_SEED_BASE, args.cls_train_scenes, BOX_JITTER)
    x_eval, y_eval, _ = crop_set(CLS_EVAL_SEED, args.cls_eval_scenes, BOX_JITTER, chunk=args.cls_eval_scenes)
    log(f"[products] {len(x)} training crops, {len(x_eval)} held-out crops; per class min "
        f"{np.bincount(y, minlength=CLS_SPEC.nc).min()}")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    # Products lie at any angle on the platter: flips of the crop are not allowed (printed text would
    # mirror), transposes neither; 180-degree turns are fine but the renders already cover them.
    model = clib.train(CLS_SPEC, x, y, args.cls_epochs, args.cls_batch, args.cls_lr, args.seed, log,
                       augment=dict(hflip=False, vflip=False, rot90=False, color=0.1),
                       time_budget_s=args.cls_budget)
    train_seconds = time.time() - started
    log(f"[products] torch held-out top-1 {clib.torch_top1(model, x_eval, y_eval):.4f}")
    return finish_classifier(args, log, model, out, CLS_SPEC, x, seeds, x_eval, y_eval, train_seconds, started,
                             calib=crop_set(CLS_CALIB_SEED, args.cls_calib_scenes, BOX_JITTER,
                                            chunk=args.cls_calib_scenes)[0],
                             calib_seed=CLS_CALIB_SEED, eval_seed=CLS_EVAL_SEED, which="products",
                             summary=("Product identity for the self-checkout: a crop of one product (cut from the "
                                      f"`{DET_NAME}` box by the agent's cascade) -> its sku. Trained only on renders "
                                      "from `hw_sim.checkout_scene.CheckoutRenderer`. The shipped model is the INT8 IR."),
                             descriptions={p.sku: p.name for p in CATALOG},
                             notes=(f"One crop per product in each scene, box jittered by up to {BOX_JITTER:.0%} per side "
                                    "(+-2 px) so it tolerates detector boxes; colour/brightness jitter."),
                             test=f"`tests/test_model_accuracy_checkout.py` re-checks the shipped IRs through the "
                                  f"agent's `Detector` + `Classifier` on renderer seed {TEST_SEED}.",
                             batch=args.cls_batch, lr=args.cls_lr)


def finish_classifier(args, log, model, out, spec, x, seeds, x_eval, y_eval, train_seconds, started, *, calib,
                      calib_seed, eval_seed, which, summary, descriptions, notes, test, batch, lr, extra_md=()):
    """Export, quantize, evaluate and card a trained crop classifier (shared with build_severity.py)."""
    ov_fp32 = clib.export_fp32(spec, model)
    clib.write_ir(spec.name, ov_fp32, out / "fp32", clib.classifier_metadata(spec, f"{spec.name} FP32", int8=False))
    ov_int8 = clib.quantize_int8(ov_fp32, calib)
    clib.write_ir(spec.name, ov_int8, out / "int8", clib.classifier_metadata(spec, f"{spec.name} INT8", int8=True))
    metrics = {}
    for name in ("fp32", "int8"):
        metrics[name] = r = clib.evaluate_top1(out / name / f"{spec.name}.xml", x_eval, y_eval, spec)
        log(f"[{which}] {name}: top-1 {r['top1']:.4f} ({r['crops'] - r['correct']} errors / {r['crops']})")
    metrics["latency"] = {n: clib.measure_latency(out / n / f"{spec.name}.xml", (1, 3, spec.imgsz, spec.imgsz))
                          for n in ("fp32", "int8")}
    card = {
        "name": spec.name, "version": spec.version, "date": clib.utc_now(), "task": "classify", "summary": summary,
        "classes": list(spec.names), "class_descriptions": descriptions, "input_size": spec.imgsz,
        "input": {"name": "images", "shape": [-1, 3, spec.imgsz, spec.imgsz], "layout": "NCHW", "colour": "RGB",
                  "scale": "0..1", "resize": "cv2 INTER_LINEAR stretch (agent Classifier)",
                  "crop": spec.crop.as_metadata()},
        "output": {"name": "logits", "shape": [-1, spec.nc]},
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"crops": int(len(x)), "renderer_seeds": [seeds[0], seeds[-1]],
                     "epochs": getattr(model, "epochs_run", None), "batch": batch, "lr": lr, "torch_seed": args.seed, "threads": args.threads, "seconds": round(train_seconds, 1),
                     "notes": notes},
        "calibration": {"crops": int(len(calib)), "renderer_seed": calib_seed},
        "evaluation": {"crops": int(len(x_eval)), "renderer_seed": eval_seed},
        "metrics": metrics,
        "benchmark_app_fps": dlib.benchmark_app_fps(out, spec.name, shape=f"[1,3,{spec.imgsz},{spec.imgsz}]"),
        "measured_on": dlib.measured_on(), "files": clib.file_hashes(out, spec.name),
        "rebuild_command": rebuild_command(args, which), "build_seconds": round(time.time() - started, 1),
        "test": test,
    }
    clib.write_card(out, card, extra_md)
    log(f"[{which}] wrote {out / 'CARD.md'}")
    return card


def rebuild_command(args, which) -> str:
    return args.rebuild_prefix + {"detector": " --only detector", "products": " --only products"}.get(which, "") \
        + args.rebuild_suffix


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("detector", "products"), help="build just one of the two models")
    parser.add_argument("--det-train-images", type=int, default=2400)
    parser.add_argument("--det-epochs", type=int, default=6)
    parser.add_argument("--det-batch", type=int, default=16)
    parser.add_argument("--det-lr", type=float, default=3e-3)
    parser.add_argument("--det-budget", type=float, default=None, help="seconds: stop training after the epoch "
                        "that passes this")
    parser.add_argument("--det-calib-images", type=int, default=200)
    parser.add_argument("--det-eval-images", type=int, default=400)
    parser.add_argument("--cls-train-scenes", type=int, default=4000)
    parser.add_argument("--cls-epochs", type=int, default=12)
    parser.add_argument("--cls-batch", type=int, default=64)
    parser.add_argument("--cls-lr", type=float, default=3e-3)
    parser.add_argument("--cls-budget", type=float, default=None)
    parser.add_argument("--cls-calib-scenes", type=int, default=200)
    parser.add_argument("--cls-eval-scenes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the build box is shared)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for init and batch order")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT / "models")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    rest = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--only":
            skip = True
            continue
        if a.startswith("--only="):
            continue
        rest.append(a)
    args.rebuild_prefix = ".venv/bin/python models/build_checkout.py"
    args.rebuild_suffix = (" " + " ".join(rest)) if rest else ""

    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    if args.only in (None, "detector"):
        build_detector(args, log)
    if args.only in (None, "products"):
        build_products(args, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
