"""The PLC handshake against a real pymodbus server: heartbeat and the PLC's stale-heartbeat
fault, read-back verification, a cut and restored link (through a TCP proxy), and Modbus RTU
over a socat pty pair."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from agent.act.heartbeat import Heartbeat
from agent.act.plc import ModbusPlc, ModbusTcpPlc, ResultCode, RtuLink
from agent.act.reject_timing import RejectTimer, RejectTiming
from agent.gpio import PulseOutput
from hw_sim.netproxy import NetProxy
from hw_sim.plc import SimPlc

pytestmark = pytest.mark.timeout(60)


def wait_until(condition, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def test_heartbeat_counts_while_healthy_and_goes_stale_when_not():
    health = {"problem": None}
    states = []
    with SimPlc(heartbeat_timeout_s=0.5) as sim, ModbusTcpPlc("127.0.0.1", sim.port) as plc:
        beat = Heartbeat(plc, lambda: health["problem"], period_s=0.1, on_state=states.append)
        beat.start()
        try:
            assert wait_until(lambda: sim.read_holding(108, 1)[0] >= 5, 2.0)
            assert sim.read_holding(109, 1) == [1]  # online
            assert not sim.heartbeat_faulted
            health["problem"] = "camera offline"
            held_at = time.monotonic()
            assert wait_until(lambda: sim.heartbeat_faulted, 2.0)
            assert time.monotonic() - held_at < 0.5 + 0.2 + 0.1
            assert sim.read_holding(109, 1) == [0]
            health["problem"] = None
            assert wait_until(lambda: not sim.heartbeat_faulted, 1.0)
        finally:
            beat.close()
    assert states == ["green", "red", "green"]
    assert len(sim.heartbeat_faults) == 1 and sim.heartbeat_faults[0].t_recovered is not None


def test_result_block_carries_the_handshake_and_is_verified():
    with SimPlc() as sim, ModbusTcpPlc("127.0.0.1", sim.port) as plc:
        assert plc.write_result(41, ResultCode.REJECT, 2, reject=True, defect_class=3, trigger_id=44)
        (result,) = sim.wait_for_results(1, 2.0)
        assert (result.inspection_id, result.trigger_id, result.result_code, result.defect_class, result.valid) == \
            (41, 44, 2, 3, True)
        assert sim.read_holding(100, 8) == [0, 41, 2, 2, 3, 1, 0, 44]
        stats = plc.stats()
        assert stats["verify_failures"] == 0 and stats["write_ms_p50"] > 0


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_link_cut_is_found_within_1_s_and_nothing_stale_goes_out_after_reconnect(fault):
    pins = MockFactory()
    reject = PulseOutput(27, pins)
    with SimPlc() as sim, NetProxy("127.0.0.1", sim.port) as proxy, \
            ModbusTcpPlc("127.0.0.1", proxy.port, timeout_s=0.25, reconnect_min_s=0.1, reconnect_max_s=0.2) as plc:
        beat = Heartbeat(plc, lambda: None, period_s=0.5)
        timer = RejectTimer(RejectTiming(travel_s=0.3, pulse_s=0.01), reject)
        timer.start()
        beat.start()
        try:
            assert wait_until(lambda: plc.connected, 2.0)
            assert plc.write_result(1, ResultCode.PASS, 0, reject=False)
            cut_at = time.monotonic()
            getattr(proxy, fault)()
            assert wait_until(lambda: not plc.connected, 1.0), "the cut was not noticed within 1 s"
            detected_s = time.monotonic() - cut_at
            # Parts keep coming while the link is down: the PLC writes fail fast, nothing is queued,
            # and the reject station still acts on each part's own verdict.
            for part_id, passed in ((2, False), (3, True)):
                timer.part_entered(part_id, time.monotonic())
                assert timer.result(part_id, passed)
                assert plc.write_result(part_id, ResultCode.PASS if passed else ResultCode.REJECT, 0, not passed) is False
            time.sleep(0.4)
            proxy.pass_through()
            assert wait_until(lambda: plc.connected, 3.0)
            time.sleep(0.3)
            # Reconnecting cleared result-valid first: the block from before the cut is not a new result.
            assert sim.read_holding(105, 1) == [0]
            assert [r.inspection_id for r in sim.results()] == [1]
            assert plc.write_result(4, ResultCode.PASS, 0, reject=False)
            assert [r.inspection_id for r in sim.wait_for_results(2, 2.0)] == [1, 4]
        finally:
            beat.close()
            timer.close()
    states = pins.pin(27).states
    assert states[-1].state is False  # the reject output rests in its safe (off) state
    assert sum(1 for a, b in zip(states, states[1:]) if b.state and not a.state) == 1  # part 2 only
    assert detected_s < 1.0
    reject.close()
    pins.close()


@pytest.fixture
def pty_pair(tmp_path: Path):
    assert shutil.which("socat"), "socat is missing: scripts/setup.sh installs it (apt-get install -y socat)"
    agent_end, plc_end = tmp_path / "agent-tty", tmp_path / "plc-tty"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={agent_end}", f"pty,raw,echo=0,link={plc_end}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: agent_end.exists() and plc_end.exists(), 5.0, 0.02)
        yield str(agent_end), str(plc_end)
    finally:
        proc.terminate()
        proc.wait(5)


def test_modbus_rtu_over_a_pty_pair(pty_pair):
    agent_end, plc_end = pty_pair
    # 8N1: a Linux pty refuses parity settings (EINVAL); a real RS-485 port takes the 8E1 default.
    with SimPlc(serial_port=plc_end, baudrate=115200, parity="N") as sim, \
            ModbusPlc(RtuLink(agent_end, baudrate=115200, parity="N"), timeout_s=0.5) as plc:
        assert wait_until(lambda: plc.connected, 3.0)
        assert plc.write_result(70_000, ResultCode.REJECT, 1, reject=True, defect_class=2, trigger_id=70_001)
        assert plc.write_heartbeat(1, online=True)
        sim.set_belt(1.0, 1000)
        time.sleep(0.05)
        assert plc.read_encoder() > 0
        (result,) = sim.wait_for_results(1, 2.0)
        assert (result.inspection_id, result.trigger_id, result.result_code, result.reject) == (70_000, 70_001, 2, True)
        assert plc.stats()["link"].startswith(f"PLC {agent_end} (RTU 115200 8N1")
