"""`edge-agent demo`: the simulated inspection line end to end, with a scorecard."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .broker import BrokerUnavailable
from .conveyor import BeltSettings
from .harness import DEFAULT_MODEL, CellSettings, SimulatedCell, card_threshold


def _progress(stream):
    started = time.monotonic()
    interactive = stream.isatty()

    def report(done: int, total: int) -> None:
        if interactive:
            bar = "#" * (30 * done // total)
            stream.write(f"\r  parts {done:>4}/{total}  [{bar:<30}]  {time.monotonic() - started:5.1f} s")
            if done == total:
                stream.write("\n")
        elif done % 50 == 0 or done == total:
            stream.write(f"  parts {done}/{total}  {time.monotonic() - started:.1f} s\n")
        stream.flush()

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent demo", description=__doc__)
    parser.add_argument("--parts", type=int, default=300, help="parts to run (default 300)")
    parser.add_argument("--rate", type=float, default=400.0, help="parts per minute (default 400)")
    parser.add_argument("--seed", type=int, default=4242, help="scene seed (default 4242)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="defect score threshold (default: the model card's operating threshold)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="detector IR folder")
    args = parser.parse_args(argv)
    if args.parts < 1 or not 1 <= args.rate <= 2000:
        parser.error("--parts must be >= 1 and --rate between 1 and 2000 parts per minute")

    belt = BeltSettings(parts_per_minute=args.rate, dwell_s=min(0.08, 0.5 * 60 / args.rate))
    threshold = args.threshold if args.threshold is not None else card_threshold(args.model)
    settings = CellSettings(seed=args.seed, belt=belt, model=args.model, threshold=threshold)
    out = sys.stdout
    out.write(f"edge-agent demo: {args.parts} parts at {args.rate:g}/min; reject station "
              f"{belt.reject_distance_m} m downstream at {belt.belt_speed_mps} m/s ({belt.travel_s * 1000:.0f} ms)\n")
    try:
        with SimulatedCell(settings) as cell:
            out.write(f"  simulator up: mosquitto :{cell.broker.port}, PLC :{cell.plc.port}, camera {cell.camera.url}\n")
            out.write("  rendering parts...\n")
            parts = cell.make_parts(args.parts)
            card = cell.run(parts, progress=_progress(out))
    except BrokerUnavailable as exc:
        print(f"edge-agent demo: {exc}", file=sys.stderr)
        return 2
    out.write("\nScorecard\n" + card.render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
