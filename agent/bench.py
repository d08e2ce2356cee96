"""`edge-agent bench`: our pipeline beside OpenVINO's own benchmark_app, on the same IR, in one run.

Prints figures; asserts nothing. Frames are synthetic 640x480 BGR (content barely matters to
speed), or real images from --images. The pipeline is measured with the default resize (on the
host, by cv2, for CPU) and with OpenVINO's in-graph resize, side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .infer.engine import AsyncDetector, Detector, Model, cpu_precisions


def model_rows(int8: Path, fp32: Path | None) -> list[tuple[str, Path, str]]:
    """(row name, IR, precision) to measure: the INT8 IR as deployed, the FP32 IR kept in f32, and,
    on a CPU that runs FP32 IRs in bf16 by default, the FP32 IR as deployed too ("fp32/bf16")."""
    rows = [("int8", int8, "auto")]
    if fp32 is not None:
        rows.append(("fp32", fp32, "f32"))
        default = cpu_precisions()[1]
        if default != "f32":
            rows.append((f"fp32/{default}", fp32, "auto"))
    return rows


def _frames(images: Path | None, count: int = 32) -> list[np.ndarray]:
    if images is not None:
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
        frames = [f for f in frames if f is not None]
        if frames:
            return frames
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (480, 640, 3), dtype=np.uint8)
    return [np.roll(base, i * 7, axis=1) for i in range(count)]


def benchmark_app_fps(xml: Path, hint: str, seconds: int, precision: str = "auto") -> float | None:
    """FPS that OpenVINO's benchmark_app reports for this IR on CPU with `hint` (and
    `-infer_precision`, unless precision is auto)."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        return None
    extra = [] if precision == "auto" else ["-infer_precision", precision]
    result = subprocess.run([exe, "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds), *extra],
                            capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"Throughput:\s*([\d.]+)\s*FPS", result.stdout)
    return float(match.group(1)) if match else None


PIPELINE_PARTS = ("all", "no_decode", "infer_only")


class _Undecoded:
    """The breakdown's stand-in for a Detector: the same model, its results counted, not decoded."""

    def __init__(self, model: Model):
        self.model = model

    def decode(self, output, source_hw, conf_threshold) -> list:
        return []


def pipeline_fps(xml: Path, frames: list[np.ndarray], seconds: float, conf: float = 0.25, resize: str = "auto",
                 precision: str = "auto", parts: str = "all") -> float:
    """Sustained frames/s through the agent's async path: preprocess, infer, decode + NMS.

    parts, to show where the time goes: "all" (the pipeline as the agent runs it), "no_decode"
    (preprocess and infer; results are counted, not decoded), "infer_only" (frames resized
    beforehand: only the async submit and the in-graph pad, colour and scale remain)."""
    if parts not in PIPELINE_PARTS:
        raise ValueError(f"parts must be one of {PIPELINE_PARTS}")
    model = Model(xml, performance_hint="THROUGHPUT", resize=resize, precision=precision)
    done = [0]

    def on_result(detections, _userdata):  # on this thread, in submit and wait_all
        done[0] += len(detections)

    runner = AsyncDetector(Detector(model) if parts == "all" else _Undecoded(model), conf, on_result)
    if parts == "infer_only":  # the same letterbox, compiled for frames of the resized size
        frames = [model.prepare(f) for f in frames]
    submit, wait = (lambda frame: runner.submit([frame])), runner.wait_all
    for frame in frames[:8]:  # compile and warm up
        submit(frame)
    wait()
    done[0] = 0
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        submit(frames[i % len(frames)])
        i += 1
    wait()
    return done[0] / (time.perf_counter() - started)


def pipeline_latency_ms(xml: Path, frames: list[np.ndarray], runs: int = 300, conf: float = 0.25,
                        precision: str = "auto") -> dict[str, list[float]]:
    """Per-frame latency, LATENCY hint, one frame at a time, by stage: JPEG decode of the camera
    frame, preprocess (host resize), infer (in-graph pad/colour/scale + the network), decode + NMS."""
    detector = Detector(Model(xml, performance_hint="LATENCY", precision=precision))
    model = detector.model
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1] for f in frames]
    for frame in frames[:5]:
        detector.detect(frame, conf)
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": [], "nms": [], "total": []}
    for i in range(runs):
        t0 = time.perf_counter()
        frame = cv2.imdecode(jpegs[i % len(jpegs)], cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        request = detector._request(frame.shape[:2], 1)
        model.fill(request, [frame])
        t2 = time.perf_counter()
        request.infer()
        t3 = time.perf_counter()
        detector.decode(request.get_output_tensor(0).data, frame.shape[:2], conf)
        t4 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[key].append(value * 1000)
    return stages


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(models: list[tuple[str, Path, str]], seconds: int, images: Path | None, out=sys.stdout, rounds: int = 3,
        breakdown: bool = False) -> dict:
    """models: (row name, IR, precision), e.g. from model_rows. breakdown: also measure the
    pipeline without decode + NMS, and with frames resized beforehand (see pipeline_fps)."""
    frames = _frames(images)
    capabilities, default = cpu_precisions()
    out.write(f"CPU: {os.cpu_count()} cores, OpenVINO capabilities {' '.join(capabilities)}, layers that are not "
              f"quantised run in {default} by default; frames {frames[0].shape[1]}x{frames[0].shape[0]}; "
              f"medians of {rounds} interleaved rounds of {seconds} s per figure\n\n")
    table = {}
    for name, xml, precision in models:
        # Interleaved rounds, medians: a load change on a shared machine then hits every figure alike.
        rounds_of: dict[str, list[float]] = {}
        for _ in range(rounds):
            for key, measure in (
                ("benchmark_app_throughput_fps", lambda: benchmark_app_fps(xml, "throughput", seconds, precision)),
                ("pipeline_fps", lambda: pipeline_fps(xml, frames, seconds, precision=precision)),
                ("benchmark_app_latency_fps", lambda: benchmark_app_fps(xml, "latency", seconds, precision)),
                ("pipeline_graph_resize_fps", lambda: pipeline_fps(xml, frames, seconds, resize="graph",
                                                                   precision=precision)),
                *([("pipeline_no_decode_fps", lambda: pipeline_fps(xml, frames, seconds, precision=precision,
                                                                   parts="no_decode")),
                   ("pipeline_infer_only_fps", lambda: pipeline_fps(xml, frames, seconds, precision=precision,
                                                                    parts="infer_only"))] if breakdown else []),
            ):
                value = measure()
                if value is not None:
                    rounds_of.setdefault(key, []).append(value)
        row = {key: (statistics.median(values) if values else None) for key, values in rounds_of.items()}
        for key in ("benchmark_app_throughput_fps", "benchmark_app_latency_fps", "pipeline_fps",
                    "pipeline_graph_resize_fps"):
            row.setdefault(key, None)
        row["pipeline_ratio_per_round"] = [p / b for p, b in zip(rounds_of.get("pipeline_fps", []),
                                                                 rounds_of.get("benchmark_app_throughput_fps", []))]
        stages = pipeline_latency_ms(xml, frames, precision=precision)
        row["latency_p50_ms"], row["latency_p99_ms"] = _pct(stages["total"], 50), _pct(stages["total"], 99)
        row["stages_p50_ms"] = {key: _pct(values, 50) for key, values in stages.items() if key != "total"}
        table[name] = row
    header = (f"{'model':<9} {'benchmark_app tput':>19} {'benchmark_app lat':>18} {'pipeline':>10} {'ratio':>6} "
              f"{'graph resize':>13} {'ratio':>6} {'latency p50/p99':>18}")
    out.write(header + "\n" + "-" * len(header) + "\n")
    fmt = lambda v: f"{v:.1f} FPS" if v else "n/a"  # noqa: E731
    for name, row in table.items():
        bapp = row["benchmark_app_throughput_fps"]
        ratio = lambda v: f"{v / bapp:.2f}" if bapp else "n/a"  # noqa: E731
        out.write(f"{name:<9} {fmt(bapp):>19} {fmt(row['benchmark_app_latency_fps']):>18} "
                  f"{fmt(row['pipeline_fps']):>10} {ratio(row['pipeline_fps']):>6} "
                  f"{fmt(row['pipeline_graph_resize_fps']):>13} {ratio(row['pipeline_graph_resize_fps']):>6} "
                  f"{row['latency_p50_ms']:>7.2f} / {row['latency_p99_ms']:.2f} ms\n")
    for name, row in table.items():
        ratios = ", ".join(f"{r:.2f}" for r in row["pipeline_ratio_per_round"])
        out.write(f"{name:<9} pipeline / benchmark_app throughput, per round: {ratios}\n")
    if breakdown:
        out.write("\nwhere the pipeline's time goes, as a fraction of benchmark_app throughput: frames resized "
                  "beforehand (async submit + in-graph pad/colour/scale + infer), + host resize, + decode and NMS "
                  "(the pipeline)\n")
        for name, row in table.items():
            bapp = row["benchmark_app_throughput_fps"]
            parts = [row.get(k) for k in ("pipeline_infer_only_fps", "pipeline_no_decode_fps", "pipeline_fps")]
            out.write(f"{name:<9} " + "  ".join(f"{p / bapp:.2f}" if p and bapp else "n/a" for p in parts) + "\n")
    out.write("\nper-frame latency p50 by stage (ms): JPEG decode, preprocess (host resize), infer, decode + NMS\n")
    for name, row in table.items():
        out.write(f"{name:<9} " + "  ".join(f"{k} {v:.3f}" for k, v in row["stages_p50_ms"].items()) + "\n")
    if "int8" in table:
        out.write("\n")
        for other in [name for name in table if name.startswith("fp32")]:
            a, b = table["int8"], table[other]
            speedup = lambda key: f"{a[key] / b[key]:.2f}x" if a[key] and b[key] else "n/a"  # noqa: E731
            out.write(f"INT8 vs {other.upper()}: benchmark_app throughput {speedup('benchmark_app_throughput_fps')}, "
                      f"pipeline throughput {speedup('pipeline_fps')}, "
                      f"latency p50 {b['latency_p50_ms'] / a['latency_p50_ms']:.2f}x\n")
    return table
