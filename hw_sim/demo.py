"""`edge-agent demo`: a simulated line end to end, with a scorecard.

    edge-agent demo [--parts 300] ...                          the inspection line (the default)
    edge-agent demo --use-case checkout [--baskets 100] ...    the self-checkout: scale, camera, POS
    edge-agent demo --use-case surveillance [--seconds 60]     a street camera: tracking, tripwires, zones
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .broker import BrokerUnavailable
from .conveyor import BeltSettings
from .harness import DEFAULT_MODEL, CellSettings, SimulatedCell, card_threshold


def _progress(stream, what: str = "parts"):
    started = time.monotonic()
    interactive = stream.isatty()

    def report(done: int, total: int) -> None:
        if interactive:
            bar = "#" * (30 * done // total)
            stream.write(f"\r  {what} {done:>4}/{total}  [{bar:<30}]  {time.monotonic() - started:5.1f} s")
            if done == total:
                stream.write("\n")
        elif done % 50 == 0 or done == total:
            stream.write(f"  {what} {done}/{total}  {time.monotonic() - started:.1f} s\n")
        stream.flush()

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", choices=["inspection", "checkout", "surveillance"], default="inspection",
                        help="inspection (default), checkout or surveillance")
    parser.add_argument("--seconds", type=float, default=60.0, help="surveillance: length of the street clip "
                                                                     "(default 60)")
    parser.add_argument("--baskets", type=int, default=100, help="checkout: baskets to run (default 100)")
    parser.add_argument("--protocol", choices=["mtsics", "toledo"], default="mtsics", help="checkout: the scale's")
    parser.add_argument("--parts", type=int, default=300, help="inspection: parts to run (default 300)")
    parser.add_argument("--rate", type=float, default=400.0, help="parts per minute (default 400)")
    parser.add_argument("--seed", type=int, default=None, help="scene seed (default 4242; checkout 23000; "
                                                                "surveillance 47000)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="defect score threshold (default: the model card's operating threshold)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="detector IR folder")
    args = parser.parse_args(argv)
    if args.use_case == "checkout":
        return _checkout(args)
    if args.use_case == "surveillance":
        return _surveillance(args)
    args.seed = 4242 if args.seed is None else args.seed
    if args.parts < 1 or not 1 <= args.rate <= 2000:
        parser.error("--parts must be >= 1 and --rate between 1 and 2000 parts per minute")

    belt = BeltSettings(parts_per_minute=args.rate, dwell_s=min(0.08, 0.5 * 60 / args.rate))
    threshold = args.threshold if args.threshold is not None else card_threshold(args.model)
    settings = CellSettings(seed=args.seed, belt=belt, model=args.model, threshold=threshold)
    out = sys.stdout
    out.write(f"edge-agent demo: {args.parts} parts at {args.rate:g}/min; reject station "
              f"{belt.reject_distance_m} m downstream at {belt.belt_speed_mps} m/s ({belt.travel_s * 1000:.0f} ms)\n")

    def play():
        with SimulatedCell(settings) as cell:
            out.write(f"  simulator up: mosquitto :{cell.broker.port}, PLC :{cell.plc.port}, camera {cell.camera.url}\n")
            out.write("  rendering parts...\n")
            parts = cell.make_parts(args.parts)
            return cell.run(parts, progress=_progress(out))

    return _scorecard(play, out)


def _scorecard(play, out) -> int:
    """Run the simulated cell and print its scorecard; a missing broker is a user error."""
    try:
        card = play()
    except BrokerUnavailable as exc:
        print(f"edge-agent demo: {exc}", file=sys.stderr)
        return 2
    out.write("\nScorecard\n" + card.render() + "\n")
    return 0 if getattr(card, "exit_code", 0) == 0 else 1


def _checkout(args) -> int:
    from .checkout_cell import HELD_OUT_SEED, CheckoutCell, CheckoutSettings, make_baskets

    if args.baskets < 1:
        print("edge-agent demo: --baskets must be >= 1", file=sys.stderr)
        return 2
    seed = HELD_OUT_SEED if args.seed is None else args.seed
    out = sys.stdout
    out.write(f"edge-agent demo: self-checkout, {args.baskets} baskets (renders of seed {seed}, which the models "
              f"never saw)\n  rendering baskets...\n")
    baskets = make_baskets(args.baskets, seed)

    def play():
        with CheckoutCell(CheckoutSettings(seed=seed, protocol=args.protocol)) as cell:
            out.write(f"  simulator up: mosquitto :{cell.broker.port}, scale {args.protocol} on {cell.scale.link}, "
                      f"camera {cell.camera.stream_url}, POS {cell.pos.url}; edge-agent run is ready\n")
            return cell.run(baskets, progress=_progress(out, "baskets"))

    return _scorecard(play, out)


def _surveillance(args) -> int:
    from .street_demo import HELD_OUT_SEED, run

    if not 20 <= args.seconds <= 3600:
        print("edge-agent demo: --seconds must be between 20 and 3600", file=sys.stderr)
        return 2
    seed = HELD_OUT_SEED if args.seed is None else args.seed
    out = sys.stdout
    out.write(f"edge-agent demo: a street camera, a {args.seconds:g} s clip (renders of seed {seed}, which the models "
              f"never saw)\n  rendering the clip...\n")
    return _scorecard(lambda: run(args.seconds, seed, out, progress=_progress(out, "frames")), out)


if __name__ == "__main__":
    sys.exit(main())
