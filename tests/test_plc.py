"""The PLC link against a real pymodbus server over loopback TCP (no mocks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.act.plc import ModbusTcpPlc, PlcError, PlcRegisterMap, ResultCode
from hw_sim.plc import PlcResult, SimPlc

TIMEOUT_S = 0.25


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sim_plc() -> Iterator[SimPlc]:
    sim = SimPlc()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def stopped_sim_plc() -> Iterator[SimPlc]:
    """A SimPlc on a known free port that the test starts when it wants the PLC up."""
    sim = SimPlc(port=free_port())
    yield sim
    sim.stop()


@pytest.fixture
def make_plc() -> Iterator[Callable[..., ModbusTcpPlc]]:
    created: list[ModbusTcpPlc] = []

    def make(port: int, **kwargs) -> ModbusTcpPlc:
        settings = dict(timeout_s=TIMEOUT_S, reconnect_min_s=0.05, reconnect_max_s=0.5)
        plc = ModbusTcpPlc("127.0.0.1", port, **{**settings, **kwargs})
        created.append(plc)
        return plc

    yield make
    for plc in created:
        plc.close()


def test_write_result_round_trip(sim_plc: SimPlc, make_plc) -> None:
    plc = make_plc(sim_plc.port)
    plc.start()
    assert plc.connected

    big_id = 0x0001_1170  # 70000: needs both words, so a swapped word order shows up
    assert plc.write_result(big_id, ResultCode.REJECT, 3, reject=True)
    assert plc.write_result(7, ResultCode.PASS, 0, reject=False)

    first, second = sim_plc.wait_for_results(2, timeout=2.0)
    assert (first.inspection_id, first.result_code, first.defect_count, first.reject) == (big_id, 2, 3, True)
    assert (second.inspection_id, second.result_code, second.defect_count, second.reject) == (7, 1, 0, False)
    assert first.t_mono <= second.t_mono
    assert sim_plc.read_holding(100, 4) == [0, 7, 1, 0]

    assert plc.write_result(0xFFFF_FFFF, ResultCode.NO_READ, 70_000, reject=False)
    assert sim_plc.wait_for_results(3, timeout=2.0)[-1] == PlcResult(
        t_mono=sim_plc.results()[-1].t_mono,
        inspection_id=0xFFFF_FFFF,
        result_code=3,
        defect_count=0xFFFF,  # saturates rather than wrapping
        reject=False,
        trigger_id=0xFFFF_FFFF,
    )
    assert sim_plc.read_holding(100, 4) == [0xFFFF, 0xFFFF, 3, 0xFFFF]

    stats = plc.stats()
    assert stats["connected"] is True
    assert (stats["writes_ok"], stats["writes_failed"], stats["reconnects"]) == (3, 0, 0)
    assert stats["last_error"] is None
    assert 0 < stats["last_write_ms"] < 1000 * TIMEOUT_S
    assert stats["verify_failures"] == 0 and stats["write_ms_p50"] is not None


def test_write_result_is_thread_safe(sim_plc: SimPlc, make_plc) -> None:
    plc = make_plc(sim_plc.port)
    plc.start()

    def write_range(first_id: int) -> None:
        for inspection_id in range(first_id, first_id + 50):
            assert plc.write_result(inspection_id, ResultCode.PASS, 0, reject=False)

    writers = [threading.Thread(target=write_range, args=(n * 1000,)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    received = sim_plc.wait_for_results(200, timeout=5.0)
    assert sorted(r.inspection_id for r in received) == [n * 1000 + i for n in range(4) for i in range(50)]
    assert plc.stats()["writes_ok"] == 200


def test_plc_down_at_start_then_comes_up(stopped_sim_plc: SimPlc, make_plc) -> None:
    plc = make_plc(stopped_sim_plc.port)

    started = time.monotonic()
    plc.start()
    assert time.monotonic() - started < 2 * TIMEOUT_S
    assert not plc.connected

    started = time.monotonic()
    assert plc.write_result(1, ResultCode.PASS, 0, reject=False) is False
    assert time.monotonic() - started < TIMEOUT_S
    assert "unreachable" in plc.stats()["last_error"]

    stopped_sim_plc.start()
    assert wait_until(lambda: plc.connected, timeout=3.0)
    assert plc.write_result(2, ResultCode.REJECT, 1, reject=True)
    assert [r.inspection_id for r in stopped_sim_plc.wait_for_results(1, timeout=2.0)] == [2]
    stats = plc.stats()
    assert (stats["writes_ok"], stats["writes_failed"], stats["reconnects"]) == (1, 1, 0)


def test_plc_restart_mid_run_recovers_by_itself(sim_plc: SimPlc, make_plc) -> None:
    plc = make_plc(sim_plc.port)
    plc.start()
    assert plc.write_result(1, ResultCode.PASS, 0, reject=False)

    sim_plc.stop()
    started = time.monotonic()
    assert plc.write_result(2, ResultCode.PASS, 0, reject=False) is False  # discovers the drop
    assert plc.write_result(3, ResultCode.PASS, 0, reject=False) is False  # fails fast
    assert time.monotonic() - started < 2 * TIMEOUT_S
    assert not plc.connected
    assert plc.stats()["writes_failed"] == 2
    assert "link lost" in plc.stats()["last_error"]

    sim_plc.start()  # same port
    assert wait_until(lambda: plc.connected, timeout=3.0)
    assert plc.write_result(4, ResultCode.REJECT, 2, reject=True)
    assert [r.inspection_id for r in sim_plc.wait_for_results(2, timeout=2.0)] == [1, 4]
    stats = plc.stats()
    assert (stats["writes_ok"], stats["writes_failed"], stats["reconnects"]) == (2, 2, 1)


def test_outage_is_logged_once_not_per_retry(stopped_sim_plc: SimPlc, make_plc, caplog) -> None:
    plc = make_plc(stopped_sim_plc.port, reconnect_min_s=0.02, reconnect_max_s=0.05)
    with caplog.at_level(logging.INFO, logger="agent.act.plc"):
        plc.start()
        time.sleep(0.5)  # a dozen or so reconnect attempts
        stopped_sim_plc.start()
        assert wait_until(lambda: plc.connected, timeout=3.0)
    ours = [r for r in caplog.records if r.name == "agent.act.plc"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO]


def test_plc_that_never_answers_costs_at_most_the_timeout(make_plc) -> None:
    # A listening socket nobody accepts from: TCP connects, Modbus never replies. The
    # connect-time clear of result-valid finds that out, so the link never counts as up.
    with socket.socket() as hung_plc:
        hung_plc.bind(("127.0.0.1", 0))
        hung_plc.listen()
        plc = make_plc(hung_plc.getsockname()[1])
        started = time.monotonic()
        plc.start()
        assert time.monotonic() - started < TIMEOUT_S + 0.5
        assert not plc.connected

        started = time.monotonic()
        assert plc.write_result(1, ResultCode.PASS, 0, reject=False) is False
        assert time.monotonic() - started < 0.05
        assert "unreachable" in plc.stats()["last_error"]
        plc.close()


def test_plc_exception_response_is_not_a_link_failure(sim_plc: SimPlc, make_plc) -> None:
    outside_sim_registers = PlcRegisterMap(inspection_id=5000, result_code=5002, defect_count=5003,
                                           defect_class=5004, result_valid=5005, trigger_id=5006)
    plc = make_plc(sim_plc.port, register_map=outside_sim_registers)
    plc.start()

    assert plc.write_result(1, ResultCode.PASS, 0, reject=False) is False
    assert plc.connected  # the PLC answered; only the request was wrong
    stats = plc.stats()
    assert stats["writes_failed"] == 1
    assert "ILLEGAL_ADDRESS" in stats["last_error"] and "register map" in stats["last_error"]
    assert sim_plc.results() == []


def test_register_map_errors_name_the_field() -> None:
    with pytest.raises(PlcError, match="result_code must be inspection_id \\+ 2"):
        PlcRegisterMap(inspection_id=200)
    with pytest.raises(PlcError, match="reject_coil=70000 is not a Modbus address"):
        PlcRegisterMap(reject_coil=70000)
    with pytest.raises(PlcError, match="port"):
        ModbusTcpPlc("127.0.0.1", port=0)


def test_close_is_idempotent_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())

    never_started = ModbusTcpPlc("127.0.0.1", free_port())
    never_started.close()
    never_started.close()

    with SimPlc() as sim:
        plc = ModbusTcpPlc("127.0.0.1", sim.port, timeout_s=TIMEOUT_S)
        plc.start()
        assert plc.write_result(1, ResultCode.PASS, 0, reject=False)
        started = time.monotonic()
        plc.close()
        plc.close()
        assert time.monotonic() - started < 1.0
        assert not plc.connected
        assert plc.write_result(2, ResultCode.PASS, 0, reject=False) is False
        port = sim.port
    sim.stop()  # idempotent too

    with pytest.raises(ConnectionRefusedError):  # the port is released
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    assert set(threading.enumerate()) == before
