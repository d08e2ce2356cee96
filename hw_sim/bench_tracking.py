"""Analytics benchmark: what tracking + zones + tripwires cost per frame, and how accurate they are.

    .venv/bin/python -m hw_sim.bench_tracking [--frames 600] [--seeds 10] [--skip-accuracy]

1. Cost: one camera's CameraAnalytics.update (tracker, 4 zones, 4 tripwires) per frame, with N
   objects in view (N = 1, 5, 20, 50, 100) moving at constant speed with box jitter, 10% of
   their detections missed, a weak duplicate on every fifth, objects leaving and new ones
   arriving; frames 0.2 s apart (5 fps). Also the tracker alone. Mean, p50 and p99 in ms.
2. Accuracy, with the shipped INT8 detector on rendered street clips (hw_sim/analytics_eval.py):
   MOTA, IDF1, id switches and fragmentations per ground-truth track, tripwire crossings,
   zone enter/exit events and loiterers flagged, on the same clips as the slow test.
"""

from __future__ import annotations

import argparse
import statistics
import time

from agent.postprocess.analytics import CameraAnalytics
from agent.postprocess.tracking import Tracker, TrackerSettings
from agent.postprocess.zones import TripwireSettings, ZoneSettings

from .analytics_eval import Evaluation, SyntheticCrowd
from .bench_ingest import percentile

WIDTH, HEIGHT = 640, 480
ZONES = [ZoneSettings(f"zone{i}", ((x, 120.0), (x + 150.0, 120.0), (x + 150.0, 460.0), (x, 460.0)), loiter_s=30.0)
         for i, x in enumerate((10.0, 170.0, 330.0, 480.0))]
TRIPWIRES = [TripwireSettings("v1", (213.0, 0.0), (213.0, 480.0)), TripwireSettings("v2", (426.0, 0.0), (426.0, 480.0)),
             TripwireSettings("h1", (0.0, 200.0), (640.0, 200.0)), TripwireSettings("h2", (0.0, 360.0), (640.0, 360.0))]


def bench_cost(n: int, frames: int, with_rules: bool) -> dict:
    crowd = SyntheticCrowd(n, WIDTH, HEIGHT, seed=n)
    detections = [crowd.step(0.2) for _ in range(frames + 50)]
    if with_rules:
        analytics = CameraAnalytics("cam", TrackerSettings(), ZONES, TRIPWIRES)
        update = lambda t, found: analytics.update(t, found, (WIDTH, HEIGHT))  # noqa: E731
    else:
        tracker = Tracker(TrackerSettings())
        update = tracker.update
    times = []
    alerts = 0
    for k, found in enumerate(detections):
        start = time.perf_counter()
        result = update(k * 0.2, found)
        elapsed = (time.perf_counter() - start) * 1000
        if k >= 50:  # past the first births
            times.append(elapsed)
            alerts += len(getattr(result, "alerts", ()))
    return {"mean": statistics.fmean(times), "p50": percentile(times, 50), "p99": percentile(times, 99),
            "detections": statistics.fmean(len(d) for d in detections), "alerts_per_frame": alerts / frames}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=10, help="street clips for the accuracy figures")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args(argv)

    print("Cost per frame, one camera (ms), 5 fps timestamps")
    print("| objects | detections/frame | tracker alone mean / p99 | tracker + 4 zones + 4 tripwires mean / p50 / p99 | alerts/frame |")
    print("|---|---|---|---|---|")
    for n in (1, 5, 20, 50, 100):
        bare = bench_cost(n, args.frames, with_rules=False)
        full = bench_cost(n, args.frames, with_rules=True)
        print(f"| {n} | {full['detections']:.1f} | {bare['mean']:.3f} / {bare['p99']:.3f} | "
              f"{full['mean']:.3f} / {full['p50']:.3f} / {full['p99']:.3f} | {full['alerts_per_frame']:.2f} |")
    if args.skip_accuracy:
        return
    seeds = tuple(range(19620, 19620 + args.seeds))
    print(f"\nAccuracy on {len(seeds)} street clips (seeds {seeds[0]}-{seeds[-1]}, 40 s at 5 fps, INT8 detector)")
    quiet = Evaluation(log=lambda line: None)
    figures = [quiet.tracking(seeds).summary(), "uneven 0.1-0.5 s gaps (first 4 clips at 10 fps, thinned): "
               + quiet.tracking(seeds[:4], thin=5).summary(), quiet.crossings(seeds).summary(),
               quiet.zone(seeds).summary(), quiet.loitering(seeds).summary()]
    for line in figures:
        print(f"- {line}")


if __name__ == "__main__":
    main()
