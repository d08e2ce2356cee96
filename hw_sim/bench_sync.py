"""Benchmark: nightly sync phases and the cost of hot swaps to a line running at rate.

    .venv/bin/python -m hw_sim.bench_sync [--swaps 6] [--rate 400]

The simulated cell runs parts at `--rate` per minute while the agent syncs `--swaps` bundles
in turn (INT8 and FP32 inspection detectors, each with a product database and golden set)
from hw_sim.cloud over HTTPS on loopback. It prints each phase's time (manifest, download,
golden and database checks, switch), what was downloaded and what reused, and trigger -> PLC result latency for the parts that
arrived while a sync ran against the others, plus parts without a result or late.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--rate", type=float, default=400.0, help="parts per minute")
    args = parser.parse_args(argv)

    from agent.control.auth import generate_keypair, load_private_key
    from models.make_bundle import build_bundle

    from .cloud import SimCloud
    from .conveyor import BeltSettings
    from .harness import CellSettings, SimulatedCell

    models = REPO / "models" / "inspection-detector"
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        tmp = Path(tmp)
        private, public = generate_keypair(tmp / "signing.pem")
        key = load_private_key(private)
        build_s = []
        for version in range(1, args.swaps + 1):
            started = time.monotonic()
            build_bundle(tmp / "cloud", version, key, {"defects": models / ("int8" if version % 2 else "fp32")})
            build_s.append(time.monotonic() - started)
        belt = BeltSettings(parts_per_minute=args.rate)
        with SimCloud(tmp / "cloud", tls=True) as cloud:
            sync = {"manifest_url": cloud.url, "public_keys": [str(public)], "ca_bundle": str(cloud.ca_file),
                    "window": None, "trial": {"duration_s": 1.0}}
            with SimulatedCell(CellSettings(seed=8, belt=belt, sync=sync), workdir=tmp / "cell") as cell:
                job = cell.app.sync
                windows, outcomes = [], []

                def syncs():
                    time.sleep(2.0)
                    for version in range(1, args.swaps + 1):
                        cloud.publish(version)
                        started = time.monotonic()
                        job.request().wait(120)
                        windows.append((started, time.monotonic()))
                        outcomes.append(job.last)
                        time.sleep(1.6)  # past the trial

                per_swap_s = 2.0 + 3.0
                parts = cell.make_parts(int((2.0 + args.swaps * per_swap_s) * args.rate / 60))
                worker = threading.Thread(target=syncs, daemon=True)
                worker.start()
                card = cell.run(parts)
                worker.join(120)
    latency = dict(zip((p.index for p in parts), card.latency_ms))

    def during(part) -> bool:
        return any(start <= part.t_edge <= end + 0.1 for start, end in windows)

    busy = [latency[p.index] for p in parts if p.index in latency and during(p)]
    quiet = [latency[p.index] for p in parts if p.index in latency and not during(p)]
    activated = [o for o in outcomes if o.outcome == "activated"]
    timings = {k: [o.details["timings"][k] for o in activated] for k in ("download_s", "check_s", "switch_s", "total_s")}
    print(f"bundle build (make_bundle, golden runs cached after the first of each model): "
          f"{statistics.median(build_s):.2f} s median")
    print(f"{len(activated)} of {args.swaps} syncs activated ({', '.join(o.outcome for o in outcomes)})")
    for name, values in timings.items():
        if values:
            print(f"  {name:<11} median {statistics.median(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms")
    reused = [o.details["reused"] for o in activated]
    downloaded = [o.details["bytes"] / 1e6 for o in activated]
    if activated:
        print(f"  per sync: {statistics.median(downloaded):.2f} MB downloaded, {statistics.median(reused):g} unchanged "
              "files copied from a local slot (median)")
    golden = [g["latency_ms_p50"] for o in activated for g in o.details["golden"]]
    if golden:
        print(f"  golden check, median detect per image: {statistics.median(golden):.1f} ms")
    print(f"{len(parts)} parts at {args.rate:g}/min: {card.no_result} without a PLC result, {card.late} late, "
          f"{card.events_received} events")
    print(f"  trigger -> PLC result while a sync ran: p50 {_pct(busy, 50):.1f} ms  p99 {_pct(busy, 99):.1f} ms "
          f"({len(busy)} parts)")
    print(f"  trigger -> PLC result otherwise:        p50 {_pct(quiet, 50):.1f} ms  p99 {_pct(quiet, 99):.1f} ms "
          f"({len(quiet)} parts)")
    return 0 if card.no_result == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
