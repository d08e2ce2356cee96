"""Timed reject and the fail-safe policy: gpiozero MockFactory pins, and a pymodbus SimPlc for the encoder."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from agent.act.plc import ModbusTcpPlc
from agent.act.reject_timing import RejectTimer, RejectTiming
from agent.gpio import LatchOutput, PulseOutput
from hw_sim.conveyor import BeltSettings, Part, RejectGate
from hw_sim.plc import SimPlc

REJECT_PIN, STOP_PIN = 27, 22
# 4 parts between camera and station. Results come 0.1 s after the edge, 0.3 s before their
# deadline, and late ones in the middle of the 0.1 s decision margin: a loaded 2-core CI
# machine may stall a thread for tens of ms without changing any outcome.
PITCH_S, TRAVEL_S, PULSE_S, MARGIN_S = 0.125, 0.5, 0.01, 0.1


@pytest.fixture
def pins():
    factory = MockFactory()
    yield factory
    factory.close()


def _run_parts(timer: RejectTimer, verdicts: dict[int, bool | None], late: set[int] = frozenset()) -> list[Part]:
    """Parts every PITCH_S; each verdict arrives 0.1 s after its edge (late ones after the deadline)."""
    belt = BeltSettings(parts_per_minute=60 / PITCH_S, belt_speed_mps=1.0, reject_distance_m=TRAVEL_S, dwell_s=0.02)
    parts, pending = [], []
    start = time.monotonic() + 0.02
    for n, part_id in enumerate(verdicts):
        t_edge = start + n * PITCH_S
        while time.monotonic() < t_edge:
            _answer(timer, pending, verdicts)
            time.sleep(0.001)
        t_edge = time.monotonic()
        timer.part_entered(part_id, t_edge)
        parts.append(Part(part_id, (), b"", t_edge, t_edge + belt.travel_s))
        pending.append((t_edge + (TRAVEL_S - MARGIN_S / 2 if part_id in late else 0.1), part_id))
    while pending:
        _answer(timer, pending, verdicts)
        time.sleep(0.001)
    time.sleep(TRAVEL_S + 0.1)
    return parts


def _answer(timer, pending, verdicts):
    now = time.monotonic()
    for item in [p for p in pending if p[0] <= now]:
        pending.remove(item)
        if verdicts[item[1]] is not None:
            timer.result(item[1], passed=verdicts[item[1]])


def test_each_part_is_kicked_at_the_station_with_four_in_transit(pins):
    reject = PulseOutput(REJECT_PIN, pins)
    timer = RejectTimer(RejectTiming(travel_s=TRAVEL_S, pulse_s=PULSE_S, decision_margin_s=MARGIN_S), reject)
    timer.start()
    verdicts = {i: (i % 3 != 0) for i in range(1, 31)}  # every third part is defective
    parts = _run_parts(timer, verdicts)
    timer.close()
    belt = BeltSettings(parts_per_minute=60 / PITCH_S, belt_speed_mps=1.0, reject_distance_m=TRAVEL_S, dwell_s=0.02)
    kicks = RejectGate(pins.pin(REJECT_PIN), belt, PULSE_S).kicks(parts)
    assert sorted(k.part_index for k in kicks) == [i for i, ok in verdicts.items() if not ok]
    assert max(abs(k.error_ms) for k in kicks) < 10
    stats = timer.stats()
    assert (stats["passed"], stats["rejected"], stats["fail_safe_rejects"], stats["in_transit"]) == (20, 10, 0, 0)
    reject.close()


def test_late_or_missing_results_are_rejected_by_policy(pins):
    reject = PulseOutput(REJECT_PIN, pins)
    timer = RejectTimer(RejectTiming(travel_s=TRAVEL_S, pulse_s=PULSE_S, decision_margin_s=MARGIN_S), reject)
    timer.start()
    verdicts = {1: True, 2: True, 3: None, 4: True, 5: True}  # 3: no result at all; 4: PASS after its deadline
    parts = _run_parts(timer, verdicts, late={4})
    assert timer.result(99, passed=True) is False  # a result for a part that is not on the belt
    timer.close()
    belt = BeltSettings(parts_per_minute=60 / PITCH_S, belt_speed_mps=1.0, reject_distance_m=TRAVEL_S, dwell_s=0.02)
    kicked = [k.part_index for k in RejectGate(pins.pin(REJECT_PIN), belt, PULSE_S).kicks(parts)]
    assert kicked == [3, 4]
    stats = timer.stats()
    assert stats["no_result"] == 1 and stats["late_results"] == 2 and stats["unknown_results"] == 1
    assert stats["fail_safe_rejects"] == 2 and stats["passed"] == 3
    reject.close()


def test_stop_line_fail_action_latches_the_stop_output(pins):
    reject, stop = PulseOutput(REJECT_PIN, pins), LatchOutput(STOP_PIN, pins)
    timer = RejectTimer(RejectTiming(travel_s=0.05, pulse_s=PULSE_S, fail_action="stop_line"), reject, stop)
    timer.start()
    timer.part_entered(1, time.monotonic())
    time.sleep(0.15)
    timer.close()
    assert stop.is_on and timer.stats()["stop_line"] == 1
    assert [s.state for s in pins.pin(REJECT_PIN).states] == [False]  # the stop replaces the kick
    reject.close()
    stop.close()


def test_encoder_mode_follows_the_plc_encoder_and_a_stopped_belt(pins):
    reject = PulseOutput(REJECT_PIN, pins)
    with SimPlc() as sim, ModbusTcpPlc("127.0.0.1", sim.port, timeout_s=0.25) as plc:
        sim.set_belt(speed_mps=1.0, counts_per_m=1000)  # 1000 counts/s
        timer = RejectTimer(RejectTiming(mode="encoder", encoder_counts=200, pulse_s=PULSE_S), reject,
                            encoder=plc.read_encoder)
        timer.start()
        time.sleep(0.1)  # a velocity estimate
        t_edge = time.monotonic()
        timer.part_entered(1, t_edge)
        assert timer.result(1, passed=False)
        time.sleep(0.1)
        sim.set_belt(speed_mps=0.0)  # the belt stops halfway: the part must not be kicked yet
        time.sleep(0.3)
        assert timer.stats()["rejected"] == 0
        sim.set_belt(speed_mps=1.0, counts_per_m=1000)
        time.sleep(0.2)
        timer.close()
    fires = RejectGate(pins.pin(REJECT_PIN), BeltSettings(), PULSE_S).fire_times()
    assert len(fires) == 1
    # 0.2 m of travel took 0.1 s, a 0.3 s stop, then 0.1 s more
    assert 0.47 < fires[0] - t_edge < 0.56
    reject.close()


def test_stack_light_shows_one_state_and_sounds_the_buzzer_on_red(pins):
    from agent.gpio import StackLight

    light = StackLight(pins, green=5, amber=6, red=13, buzzer=19)
    lit = lambda: {n: pins.pin(n).state for n in (5, 6, 13, 19)}  # noqa: E731
    light.show("green")
    assert lit() == {5: True, 6: False, 13: False, 19: False}
    light.show("red")
    assert lit() == {5: False, 6: False, 13: True, 19: True}
    light.show("amber")
    assert lit() == {5: False, 6: True, 13: False, 19: False}
    with pytest.raises(ValueError):
        light.show("blue")
    light.close()


def test_back_to_back_pulses_stay_separate(pins):
    reject = PulseOutput(REJECT_PIN, pins)
    reject.pulse(0.02)
    reject.pulse(0.02)  # a second reject while the first pulse is still out
    time.sleep(0.1)
    states = pins.pin(REJECT_PIN).states
    assert [s.state for s in states] == [False, True, False, True, False]
    assert states[3].timestamp >= 0.004  # the gap between them
    reject.close()
