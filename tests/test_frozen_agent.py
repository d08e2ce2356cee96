"""A frozen agent (SIGSTOP on a real `edge-agent run` process): the simulated PLC faults the line on
the stale heartbeat within 2 s, and a part inspected across the freeze never gets a PASS."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.conveyor import BeltSettings
from hw_sim.harness import DEFAULT_MODEL, LINE, agent_config, card_threshold
from hw_sim.plc import SimPlc
from hw_sim.scene import PartRenderer

PERIOD_S = 0.3
CAMERA_S = 0.12
BELT = BeltSettings(parts_per_minute=60 / PERIOD_S, belt_speed_mps=0.5, reject_distance_m=0.3)


def wait_until(condition, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.mark.timeout(180)
def test_sigstop_faults_the_line_and_no_part_across_the_freeze_passes(tmp_path, broker):
    good = encode_jpeg(PartRenderer(seed=5, defect_rate=0.0).render().image)
    # A slow camera (each snapshot takes CAMERA_S) keeps every inspection in flight for a while, so a freeze
    # aimed at the middle of that window catches one whatever the machine's load.
    with SimPlc(heartbeat_timeout_s=1.5) as plc, SimCamera(latency_s=CAMERA_S) as camera:
        camera.show(good)  # every part is good: each one passes unless the fail-safe says otherwise
        config = agent_config(broker, plc, camera, DEFAULT_MODEL, card_threshold(), outbox=tmp_path / "outbox.db",
                              belt=BELT)
        config["lines"][LINE]["trigger"] = {"type": "interval", "period_ms": PERIOD_S * 1000}
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: len(plc.results()) >= 8 and not plc.heartbeat_faulted
                              and plc.read_holding(108, 1)[0] > 2, 90), "the agent never got going"
            # Freeze inside an inspection: the interval trigger fires on a fixed grid, and a result lands
            # CAMERA_S plus a few ms after its trigger; aim at half the camera's latency after the trigger.
            last = plc.results()[-1].t_mono
            stop_at = last - CAMERA_S / 2
            while stop_at < time.monotonic() + 0.05:
                stop_at += PERIOD_S
            time.sleep(stop_at - time.monotonic())
            before = len(plc.results())
            proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            assert wait_until(lambda: plc.heartbeat_faulted, 2.5), "the PLC never saw the heartbeat go stale"
            fault_s = plc.heartbeat_faults[-1].t_detected - stopped
            time.sleep(max(0.0, stopped + 3.0 - time.monotonic()))
            proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            assert wait_until(lambda: not plc.heartbeat_faulted, 5), "the heartbeat did not come back"
            time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        results = plc.results()
    assert fault_s < 2.0, f"stale heartbeat seen {fault_s:.2f} s after SIGSTOP"
    # Results written after the freeze began: a part triggered before the freeze (inspection id at or
    # below the newest trigger the PLC had seen) may only be rejected; later parts pass as before.
    across = [r for r in results[before:] if r.t_mono > stopped]
    last_before = max(r.trigger_id for r in results[:before])
    frozen_parts = [r for r in across if r.inspection_id <= last_before + 1 and r.t_mono > resumed]
    print(f"\n  stale heartbeat seen after {fault_s * 1000:.0f} ms; parts across the freeze: "
          f"{[(r.inspection_id, r.result_code) for r in frozen_parts]}")
    assert all(r.result_code != 1 and r.reject for r in frozen_parts), frozen_parts
    assert frozen_parts, "no inspection was caught in flight by the freeze"
    assert any(r.result_code == 1 for r in results[before:] if r.t_mono > resumed + 0.5), "the line did not recover"
    assert proc.returncode == 0, err
