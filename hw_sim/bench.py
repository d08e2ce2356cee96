"""Benchmark of the inspection line on the simulator: prints figures, asserts nothing.

    .venv/bin/python -m hw_sim.bench [--parts 500] [--rate 400] [--trigger gpio|plc]

--trigger plc: the SimPlc raises part present and writes each part's trigger id, and the agent's
PLC trigger polls it (10 ms); the latency then starts when the PLC wrote the id.

Reports sensor edge -> PLC result latency (p50/p99/max over all parts, measured by the
simulated PLC when the result's last write arrives), the stage timings the agent reports in
its events, and the detector's own inference time on the same frames in a tight loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import numpy as np

from .conveyor import BeltSettings
from .harness import DEFAULT_MODEL, CellSettings, SimulatedCell, card_threshold


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def _row(name: str, values: list[float]) -> str:
    return f"  {name:<34} p50 {_pct(values, 50):7.2f}   p99 {_pct(values, 99):7.2f}   max {max(values):7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=400.0, help="parts per minute")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--trigger", choices=("gpio", "plc"), default="gpio", help="what tells the agent a part is there")
    args = parser.parse_args()

    from agent.infer.engine import Detector

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"model: {DEFAULT_MODEL}")
    belt = BeltSettings(parts_per_minute=args.rate)
    with SimulatedCell(CellSettings(seed=args.seed, belt=belt, trigger=args.trigger)) as cell:
        parts = cell.make_parts(args.parts)
        card = cell.run(parts)
        events = cell.events_by_id()

    print(f"\n{args.parts} parts at {args.rate:g}/min, reject station {belt.travel_s * 1000:.0f} ms downstream")
    print(_row("sensor edge -> PLC result" if args.trigger == "gpio" else "PLC part present -> PLC result",
               card.latency_ms))
    for stage in ("capture", "infer", "detect", "act", "total"):
        values = [e["timings_ms"][stage] for e in events.values() if stage in e["timings_ms"]]
        if values:
            print(_row(f"agent stage '{stage}'", values))
    print(f"  late results: {card.late}, missing results: {card.no_result}, no reads: {card.no_reads}, "
          f"critical missed: {card.missed_critical}, false rejects: {card.rejected_wrong}/{card.good}")

    detector = Detector(DEFAULT_MODEL, performance_hint="LATENCY")
    frames = [cv2.imdecode(np.frombuffer(p.jpeg, np.uint8), cv2.IMREAD_COLOR) for p in parts[:100]]
    for frame in frames[:10]:
        detector.detect(frame, card_threshold())
    infer, whole = [], []
    for frame in frames * 2:
        start = time.perf_counter()
        detector.detect(frame, card_threshold())
        whole.append((time.perf_counter() - start) * 1000)
        infer.append(detector.last_infer_ms)
    print(f"\ndetector alone on the same frames ({len(whole)} runs, LATENCY hint):")
    print(_row("inference (OpenVINO infer call)", infer))
    print(_row("letterbox + infer + decode + NMS", whole))
    print(f"  mean inference {statistics.fmean(infer):.2f} ms")


if __name__ == "__main__":
    main()
