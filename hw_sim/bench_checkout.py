"""The checkout line's acceptance figures: baskets right, and trigger -> result latency.

    .venv/bin/python -m hw_sim.bench_checkout [--baskets 300] [--offline 3000] [--seed 23000] [--protocol mtsics]

1. Offline: the line's decision (detector, classifier, catalog, weight check) on --offline held-out
   baskets (hw_sim.checkout_eval): the accuracy on a sample large enough for 99.5%.
2. End to end: --baskets baskets through a real `edge-agent run` (hw_sim.checkout_cell): the hand
   puts them down on a SimScale over a pty, the agent reads the camera's MJPEG stream, decides, and
   the basket reaches SimPos (durable webhook) and an MQTT subscriber. Scored the same way, with
   the latencies: trigger (the settled weight the agent read) -> basket decided, -> POS received,
   and weight stable on the scale -> POS received (adds the scale's polling and confirmation).

Renderer seed 23000 is held out: the models were trained and tested on 11000-16039 and 19000, the
thresholds were chosen on 25000-25002, the tests use 24000.
"""

from __future__ import annotations

import argparse
import sys
import time

from agent.postprocess.checkout import CheckoutRules

from .checkout_cell import HELD_OUT_SEED, CheckoutCell, CheckoutSettings, make_baskets, percentile
from .checkout_eval import evaluate, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.bench_checkout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baskets", type=int, default=300, help="end to end (default 300; 0: skip)")
    parser.add_argument("--offline", type=int, default=3000, help="decision only (default 3000; 0: skip)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--protocol", choices=["mtsics", "toledo"], default="mtsics")
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.offline:
        rules = CheckoutRules()
        started = time.monotonic()
        baskets = make_baskets(args.offline, args.seed, hands=False)
        out.write(f"offline: the line's decision on {args.offline} held-out baskets (seed {args.seed})\n")
        out.write(report(evaluate(baskets, 0.25, rules), 0.25, rules) + "\n")
        out.write(f"  ({time.monotonic() - started:.0f} s)\n\n")
    if args.baskets:
        baskets = make_baskets(args.baskets, args.seed)
        settings = CheckoutSettings(seed=args.seed, protocol=args.protocol)
        with CheckoutCell(settings) as cell:
            out.write(f"end to end: {args.baskets} baskets through edge-agent run (seed {args.seed}, scale {args.protocol} "
                      f"on a pty, camera MJPEG {settings.stream_fps:g} fps, SimPos, mosquitto)\n")
            card = cell.run(baskets, progress=_progress(out))
            status = cell.status()
        out.write(card.render() + "\n")
        for name, kind in (("trigger -> basket decided", "trigger"), ("trigger -> POS received", "pos"),
                           ("weight stable -> POS received", "settled")):
            values = card.latencies(kind)
            out.write(f"  {name:<32} p50 {percentile(values, 50):6.1f} ms  p90 {percentile(values, 90):6.1f} ms  "
                      f"p99 {percentile(values, 99):6.1f} ms  max {max(values, default=float('nan')):6.1f} ms  n={len(values)}\n")
        timings = [r.event["timings_ms"] for r in card.results if r.event is not None]
        for stage in ("capture", "infer", "classify", "decide"):
            values = [t[stage] for t in timings if stage in t]
            out.write(f"  agent stage {stage:<20} p50 {percentile(values, 50):6.1f} ms  p99 {percentile(values, 99):6.1f} ms\n")
        trigger = status["triggers"]["checkout"]
        out.write(f"  trigger: {trigger['fires']} fires, {trigger['unmatched']} unmatched member fires "
                  f"(motion {trigger['members'][0]['fires']}, scale {trigger['members'][1]['fires']})\n")
    return 0


def _progress(out):
    def report_progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            out.write(f"  baskets {done}/{total}\n")
            out.flush()

    return report_progress


if __name__ == "__main__":
    raise SystemExit(main())
