"""Re-measure the speed figures on every shipped model's card, without retraining.

    .venv/bin/python -m models.refresh_speed [--seconds 10] [--only NAME ...]

For each model under models/ it measures, on the IRs already there, the synchronous latency
(LATENCY hint) and OpenVINO's benchmark_app throughput (THROUGHPUT hint) of the FP32 and the
INT8 IR, both with the layers that are not quantised held in f32: a CPU with AVX-512 BF16 or AMX
would otherwise run the FP32 IR in bf16 and the INT8/FP32 ratio would compare INT8 with bf16.
It rewrites the speed fields of card.json (metrics.latency, benchmark_app_fps, measured_on) and
re-renders CARD.md with the model's own card writer. Accuracy, training facts and file hashes
are kept as they are: the IRs do not change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import models.classifier_lib as clib  # noqa: E402
import models.detector_lib as dlib  # noqa: E402

MODELS = REPO_ROOT / "models"


def _writers() -> dict:
    """Model name -> the function that renders its CARD.md (and card.json) from a card."""
    from models import build_checkout, build_inspection, build_severity, build_surveillance

    return {
        "inspection-detector": build_inspection.write_card,
        "inspection-severity": lambda out, card: clib.write_card(out, card, build_severity.extra_md(card)),
        "checkout-detector": build_checkout.write_detector_card,
        "checkout-products": clib.write_card,
        "surveillance-detector": build_surveillance.write_det_card,
        "vehicle-types": build_surveillance.write_cls_card,
    }


def input_shape(card: dict) -> list[int]:
    """Batch-1 input shape of the model, from its card (classifiers have a dynamic batch)."""
    if "input_size" in card:
        return [1, 3, card["input_size"], card["input_size"]]
    shape = list(card["input"]["shape"])
    return [1, *shape[1:]]


def refresh(name: str, seconds: int, writer) -> dict:
    out = MODELS / name
    card = json.loads((out / "card.json").read_text())
    shape = input_shape(card)
    card["metrics"]["latency"] = {sub: dlib.measure_latency(out / sub / f"{name}.xml", tuple(shape))
                                  for sub in ("fp32", "int8")}
    card["benchmark_app_fps"] = dlib.benchmark_app_fps(out, name, seconds=seconds,
                                                       shape="[" + ",".join(map(str, shape)) + "]")
    card["measured_on"] = dlib.measured_on()
    writer(out, card)
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="benchmark_app seconds per IR (default 10)")
    writers = _writers()
    parser.add_argument("--only", nargs="+", choices=sorted(writers), help="just these models")
    args = parser.parse_args(argv)
    for name in args.only or list(writers):
        card = refresh(name, args.seconds, writers[name])
        lat, fps = card["metrics"]["latency"], card["benchmark_app_fps"]
        print(f"{name:<22} latency median FP32 {lat['fp32']['median_ms']:.2f} ms, INT8 {lat['int8']['median_ms']:.2f} ms "
              f"({lat['fp32']['median_ms'] / lat['int8']['median_ms']:.2f}x); benchmark_app FP32 {fps['fp32']:.0f} FPS, "
              f"INT8 {fps['int8']:.0f} FPS ({fps['int8'] / fps['fp32']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
