"""`edge-agent bench` on simulator frames of each use case: prints figures, asserts nothing.

    .venv/bin/python -m hw_sim.bench_engine [--use-case inspection|checkout|surveillance|all] [--seconds 5] [--rounds 3]

For each shipped detector it renders 32 frames of its own scene (640x480, the cameras'
resolution) and runs agent.bench on its INT8 IR and its FP32 IR (kept in f32, and as deployed
when the CPU runs FP32 in bf16 by default): OpenVINO's benchmark_app with the
THROUGHPUT and LATENCY hints beside the agent's async pipeline (preprocess, infer, decode +
NMS), in interleaved rounds. Real scenes matter for the NMS figure: random noise makes a
detector fire on dozens of boxes, a conveyor part on a few.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2

from agent.bench import model_rows, run

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = REPO_ROOT / "models"
DETECTORS = {"inspection": "inspection-detector", "checkout": "checkout-detector",
             "surveillance": "surveillance-detector"}


def render_frames(use_case: str, folder: Path, count: int = 32, seed: int = 40400) -> Path:
    if use_case == "inspection":
        from .scene import PartRenderer
        renderer = PartRenderer(seed=seed)
    elif use_case == "checkout":
        from .checkout_scene import CheckoutRenderer
        renderer = CheckoutRenderer(seed=seed)
    else:
        from .street_scene import StreetRenderer
        renderer = StreetRenderer(seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), renderer.render().image)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", choices=[*DETECTORS, "all"], default="all")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure the pipeline without decode + NMS, and with frames resized beforehand")
    args = parser.parse_args()
    cases = list(DETECTORS) if args.use_case == "all" else [args.use_case]
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        for case in cases:
            name = DETECTORS[case]
            print(f"== {case}: {name} on {case} scenes")
            frames = render_frames(case, Path(tmp) / case)
            ir = {precision: MODELS / name / precision / f"{name}.xml" for precision in ("int8", "fp32")}
            run(model_rows(ir["int8"], ir["fp32"]), args.seconds, frames, rounds=args.rounds, breakdown=args.breakdown)
            print()


if __name__ == "__main__":
    main()
