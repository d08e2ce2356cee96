"""Pure logic of the sync job: the nightly schedule and the trial's health rules."""

from __future__ import annotations

import datetime
import random

import pytest

from agent.sync.job import TrialSettings, trial_problem
from agent.sync.schedule import next_run, parse_window

T = datetime.datetime


def test_parse_window():
    assert parse_window("02:00-04:00") == (120, 240)
    assert parse_window("23:30-01:00") == (1410, 60)
    for bad in ("2-4", "02:00", "25:00-01:00", "02:00-02:00", "ab:cd-01:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_the_sync_lands_at_a_random_moment_inside_the_window_once_per_window():
    rng = random.Random(1)
    window = parse_window("02:00-04:00")
    moments = [next_run(T(2026, 3, 1, 12, 0), window, rng, None)[0] for _ in range(200)]
    assert all(T(2026, 3, 2, 2, 0) <= m < T(2026, 3, 2, 4, 0) for m in moments)
    assert max(moments) - min(moments) > datetime.timedelta(minutes=100)  # spread: no fleet stampede
    inside, start = next_run(T(2026, 3, 2, 3, 0), window, rng, None)
    assert T(2026, 3, 2, 3, 0) <= inside < T(2026, 3, 2, 4, 0) and start == T(2026, 3, 2, 2, 0)
    after_its_sync, _ = next_run(T(2026, 3, 2, 3, 10), window, rng, start)
    assert after_its_sync.date() == datetime.date(2026, 3, 3)


def test_a_window_across_midnight():
    rng = random.Random(2)
    window = parse_window("23:30-01:00")
    moment, start = next_run(T(2026, 3, 2, 0, 30), window, rng, None)
    assert start == T(2026, 3, 1, 23, 30) and T(2026, 3, 2, 0, 30) <= moment < T(2026, 3, 2, 1, 0)
    moment, start = next_run(T(2026, 3, 2, 0, 30), window, rng, start)
    assert start == T(2026, 3, 2, 23, 30)


def load(errors=0, dropped=0, backlog=0, infer=None):
    return {"inspect": {"inference_errors": errors, "triggers_dropped": dropped, "inspect_backlog": backlog,
                        "infer_ms_p50": infer}}


@pytest.mark.parametrize("now, expected", [
    (load(errors=5), "1 inference error(s)"),
    (load(dropped=3), "1 trigger(s) dropped"),
    (load(infer=13.0), "inference 3.2x slower"),
])
def test_trial_rules(now, expected):
    limits = TrialSettings(max_inference_errors=0, max_slowdown=3.0)
    base = load(errors=4, dropped=2)
    problem, _ = trial_problem(limits, base, {"infer_ms_p50": {"inspect": 4.0}}, now, 0)
    assert problem is not None and expected in problem


def test_a_healthy_trial_and_a_backlog_that_must_persist():
    limits = TrialSettings(max_backlog=8)
    trial = {"infer_ms_p50": {"inspect": 4.0}}
    assert trial_problem(limits, load(), trial, load(infer=5.0), 0) == (None, 0)
    assert trial_problem(limits, load(), {"infer_ms_p50": {}}, load(infer=50.0), 0) == (None, 0)  # no baseline
    problem, strikes = trial_problem(limits, load(), trial, load(backlog=9), 0)
    assert problem is None and strikes == 1  # one busy moment is not a collapse
    problem, _ = trial_problem(limits, load(), trial, load(backlog=9), strikes)
    assert "throughput collapse" in problem
    assert trial_problem(limits, load(), trial, load(backlog=2), strikes) == (None, 0)


def test_the_scheduled_sync_runs_at_its_moment_in_a_running_agent(tmp_path):
    """Wiring: the retained status names tonight's moment; when it comes, the job syncs by itself."""
    import time

    from bundles import make, signing_key, sync_section
    from hw_sim.cloud import SimCloud
    from hw_sim.harness import DEVICE_ID, CellSettings, SimulatedCell

    key, public = signing_key(tmp_path)
    make(tmp_path / "cloud", 1, key)
    with SimCloud(tmp_path / "cloud", tls=True) as cloud:
        cloud.publish(1)
        settings = CellSettings(sync=sync_section(cloud, public, window="02:00-04:00"))
        with SimulatedCell(settings, workdir=tmp_path / "cell") as cell:
            job = cell.app.sync
            status = cell.recorder.wait_for(lambda ms: [m for m in ms if m.topic == f"edge/{DEVICE_ID}/sync"],
                                            timeout=10)[-1].json()
            moment = datetime.datetime.fromtimestamp(status["next_sync_at"])
            assert datetime.time(2, 0) <= moment.time() < datetime.time(4, 0)
            assert moment > datetime.datetime.now() and job.last is None
            job.next_at = time.time()  # as if the clock had reached it
            deadline = time.monotonic() + 30
            while job.last is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.last is not None and (job.last.outcome, job.last.trigger) == ("activated", "schedule")
            later = datetime.datetime.fromtimestamp(job.next_at)
            assert later.date() > moment.date() and datetime.time(2, 0) <= later.time() < datetime.time(4, 0)
