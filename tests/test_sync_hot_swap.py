"""A hot swap while the line runs at rate loses no trigger: every part gets its PLC result and
its event, on time, and the model changes between two inspections, never inside one."""

from __future__ import annotations

import threading
import time

import pytest

from bundles import make, signing_key, sync_section
from hw_sim.cloud import SimCloud
from hw_sim.conveyor import BeltSettings
from hw_sim.harness import LINE, CellSettings, SimulatedCell

pytestmark = pytest.mark.timeout(300)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def test_hot_swap_at_400_parts_per_minute_loses_no_trigger(tmp_path):
    key, public = signing_key(tmp_path)
    make(tmp_path / "cloud", 1, key)
    belt = BeltSettings(parts_per_minute=400, reject_distance_m=0.2, belt_speed_mps=0.5)
    with SimCloud(tmp_path / "cloud", tls=True) as cloud:
        cloud.publish(1)
        settings = CellSettings(seed=31, belt=belt, sync=sync_section(cloud, public, trial={"duration_s": 600}))
        with SimulatedCell(settings, workdir=tmp_path / "cell") as cell:
            job, line = cell.app.sync, cell.app.lines[LINE]
            swaps: list[tuple[str, float]] = []

            def update_then_roll_back():
                time.sleep(3.0)
                swaps.append(("sync requested", time.monotonic()))
                job.request().wait(60)
                swaps.append((f"sync {job.last.outcome}", time.monotonic()))
                time.sleep(2.5)
                job.rollback("test: back to the factory models")
                swaps.append(("rolled back", time.monotonic()))

            parts = cell.make_parts(120)  # 18 s at 400/min: room for a slow sync on a loaded machine
            worker = threading.Thread(target=update_then_roll_back)
            worker.start()
            card = cell.run(parts)
            worker.join(60)
            events = cell.events_by_id()

    assert job.last.outcome == "rolled_back", job.last
    assert [s for s, _ in swaps][1] == "sync activated", swaps
    assert card.no_result == 0 and card.events_received == len(parts), card.render()
    assert line.counters["triggers_dropped"] == 0 and line.counters["inference_errors"] == 0
    assert card.late == 0, card.render()  # no result after its part reached the reject station
    models = [events[p.index]["model"] for p in parts]
    # factory -> bundle 1 -> factory, each change between two parts, never back and forth
    runs = [m for i, m in enumerate(models) if i == 0 or m != models[i - 1]]
    assert runs == ["defects:inspection-detector.xml", "defects:inspection-detector.xml@1",
                    "defects:inspection-detector.xml"], runs
    t_sync, t_back = swaps[0][1], swaps[2][1]
    latency = dict(zip((p.index for p in parts), card.latency_ms))  # one per part: every part has a result
    during = [latency[p.index] for p in parts if t_sync - 0.2 <= p.t_edge <= t_back + 0.5]
    others = [latency[p.index] for p in parts if not t_sync - 0.2 <= p.t_edge <= t_back + 0.5]
    print(f"\n{len(parts)} parts at 400/min; swaps at {[(s, round(t - t_sync, 2)) for s, t in swaps]} s; "
          f"trigger -> PLC result p50/p99 while syncing and swapping {_percentile(during, 50):.1f}/"
          f"{_percentile(during, 99):.1f} ms ({len(during)} parts), otherwise {_percentile(others, 50):.1f}/"
          f"{_percentile(others, 99):.1f} ms")
