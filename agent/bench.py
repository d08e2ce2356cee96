"""`edge-agent bench`: our pipeline beside OpenVINO's own benchmark_app, on the same IR, in one run.

Prints figures; asserts nothing. Frames are synthetic 640x480 BGR (content barely matters to
speed), or real images from --images.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from .infer.engine import AsyncDetector, Detector, Model


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


def benchmark_app_fps(xml: Path, hint: str, seconds: int) -> float | None:
    """FPS that OpenVINO's benchmark_app reports for this IR on CPU with `hint`."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        return None
    result = subprocess.run([exe, "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds)],
                            capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"Throughput:\s*([\d.]+)\s*FPS", result.stdout)
    return float(match.group(1)) if match else None


def pipeline_fps(xml: Path, frames: list[np.ndarray], seconds: float, conf: float = 0.25) -> float:
    """Sustained frames/s through the agent's async path: in-graph preprocess, infer, decode + NMS."""
    model = Model(xml, performance_hint="THROUGHPUT")
    done = [0]
    lock = threading.Lock()

    def on_result(detections, _userdata):
        with lock:
            done[0] += len(detections)

    runner = AsyncDetector(Detector(model), conf, on_result)
    for frame in frames[:4]:  # compile and warm up
        runner.submit([frame])
    runner.wait_all()
    done[0] = 0
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        runner.submit([frames[i % len(frames)]])
        i += 1
    runner.wait_all()
    return done[0] / (time.perf_counter() - started)


def pipeline_latency_ms(xml: Path, frames: list[np.ndarray], runs: int = 200, conf: float = 0.25) -> list[float]:
    """Per-frame latency, LATENCY hint: preprocess + infer + decode + NMS, one frame at a time."""
    detector = Detector(xml, performance_hint="LATENCY")
    for frame in frames[:5]:
        detector.detect(frame, conf)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        detector.detect(frames[i % len(frames)], conf)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(models: list[tuple[str, Path]], seconds: int, images: Path | None, out=sys.stdout) -> dict:
    frames = _frames(images)
    out.write(f"CPU: {os.cpu_count()} cores; frames {frames[0].shape[1]}x{frames[0].shape[0]}; {seconds} s per figure\n\n")
    table = {}
    for name, xml in models:
        row = {
            "benchmark_app_throughput_fps": benchmark_app_fps(xml, "throughput", seconds),
            "benchmark_app_latency_fps": benchmark_app_fps(xml, "latency", seconds),
            "pipeline_fps": pipeline_fps(xml, frames, seconds),
        }
        latency = pipeline_latency_ms(xml, frames)
        row["latency_p50_ms"], row["latency_p99_ms"] = _pct(latency, 50), _pct(latency, 99)
        table[name] = row
    header = f"{'model':<6} {'benchmark_app tput':>19} {'benchmark_app lat':>18} {'pipeline':>9} {'ratio':>6} {'latency p50/p99':>17}"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for name, row in table.items():
        bapp = row["benchmark_app_throughput_fps"]
        ratio = f"{row['pipeline_fps'] / bapp:.2f}" if bapp else "n/a"
        fmt = lambda v: f"{v:.1f} FPS" if v else "n/a"  # noqa: E731
        out.write(f"{name:<6} {fmt(bapp):>19} {fmt(row['benchmark_app_latency_fps']):>18} "
                  f"{row['pipeline_fps']:>5.1f} FPS {ratio:>6} {row['latency_p50_ms']:>6.2f} / {row['latency_p99_ms']:.2f} ms\n")
    if "int8" in table and "fp32" in table:
        def speedup(key):
            a, b = table["int8"][key], table["fp32"][key]
            return f"{a / b:.2f}x" if a and b else "n/a"
        out.write(f"\nINT8 vs FP32: benchmark_app throughput {speedup('benchmark_app_throughput_fps')}, "
                  f"pipeline throughput {speedup('pipeline_fps')}, "
                  f"latency p50 {table['fp32']['latency_p50_ms'] / table['int8']['latency_p50_ms']:.2f}x\n")
    return table
