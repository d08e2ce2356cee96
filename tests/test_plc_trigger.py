"""The PLC trigger against a real pymodbus server (SimPlc over loopback TCP): each new trigger id
fires once with that id, short part-present pulses are not lost, jumps count as missed, a cut or
dead link never fires (not even the stale id after it comes back), and the whole line echoes
the PLC's id in its results and events."""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest

from agent.act.plc import ModbusPlc, ModbusTcpPlc, PartSignal, RtuLink
from agent.config import ConfigError, load_config
from agent.ingest.plc_trigger import PartTracker, PlcTrigger
from hw_sim.conveyor import BeltSettings
from hw_sim.harness import LINE, PLC_FIRST_TRIGGER_ID, CellSettings, SimulatedCell
from hw_sim.netproxy import NetProxy
from hw_sim.plc import SimPlc
from tests.helpers import FireRecorder, wait_until
from tests.test_plc_handshake import pty_pair  # noqa: F401 (a fixture: socat's pty pair)

pytestmark = pytest.mark.timeout(120)

EVENT_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "agent/deliver/schemas/event.json").read_text())


def link(port: int, **kwargs) -> ModbusTcpPlc:
    return ModbusTcpPlc("127.0.0.1", port, **{"timeout_s": 0.25, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
                                              **kwargs})


@contextmanager
def polling(plc: ModbusTcpPlc, fires: FireRecorder, **options):
    """A PlcTrigger that has read the PLC once (its baseline)."""
    trigger = PlcTrigger(plc, fires, **options)
    try:
        assert wait_until(lambda: trigger.stats()["state"] == "polling", 2.0), trigger.stats()
        yield trigger
    finally:
        trigger.close()


def present(sim: SimPlc, dwell_s: float = 0.0, trigger_id: int | None = None) -> int:
    part_id = sim.present_part(trigger_id)
    if dwell_s:
        time.sleep(dwell_s)
    sim.clear_part()
    return part_id


def test_each_new_trigger_id_fires_once_with_its_id_even_for_pulses_shorter_than_a_poll():
    fires = FireRecorder()
    with SimPlc(first_trigger_id=5001) as sim, link(sim.port) as plc:
        with polling(plc, fires, poll_s=0.03) as trigger:
            ids = []
            for _ in range(8):
                written = time.monotonic()
                ids.append(present(sim))  # part present up and down again within about a millisecond
                assert wait_until(lambda: len(fires.calls) == len(ids), 1.0), trigger.stats()
                assert fires.calls[-1]["t"] >= written  # the trigger's time is after the PLC wrote the id
                time.sleep(0.05)
            time.sleep(0.1)  # no further fire while nothing changes
            stats = trigger.stats()
    assert ids == list(range(5001, 5009))
    assert fires.ids == ids
    assert stats["fires"] == 8 and stats["missed"] == 0 and stats["trigger_id"] == 5008
    assert stats["connected"] and stats["faults"] == {"link_down": 0, "read_errors": 0}


def test_an_id_that_jumps_fires_for_the_newest_and_counts_the_rest_as_missed():
    fires = FireRecorder()
    with SimPlc(first_trigger_id=1) as sim, link(sim.port) as plc:
        with polling(plc, fires, poll_s=0.01) as trigger:
            for skip in (0, 0, 2, 0, 5):
                sim.skip_trigger_ids(skip)  # the PLC counted parts the agent never saw
                present(sim, dwell_s=0.03)
                assert wait_until(lambda: len(fires.calls) == len(sim.presented), 1.0)
            stats = trigger.stats()
    assert fires.ids == [1, 2, 5, 6, 12]
    assert stats["missed"] == 7 and stats["fires"] == 5


def test_a_cut_link_fires_nothing_shows_in_health_and_the_stale_id_never_fires():
    fires = FireRecorder()
    with SimPlc(first_trigger_id=100) as sim, NetProxy("127.0.0.1", sim.port) as proxy, link(proxy.port) as plc:
        with polling(plc, fires, poll_s=0.01) as trigger:
            present(sim, dwell_s=0.03)
            assert wait_until(lambda: fires.ids == [100], 1.0)
            proxy.drop()
            assert wait_until(lambda: trigger.stats()["state"] == "link_down", 2.0)
            down = trigger.stats()
            for _ in range(3):  # parts the PLC sends while the agent cannot see it
                present(sim, dwell_s=0.03)
            proxy.pass_through()
            assert wait_until(lambda: trigger.stats()["state"] == "polling", 5.0)
            time.sleep(0.2)
            after = trigger.stats()
            assert fires.ids == [100], "a part seen only after the link came back must not fire"
            present(sim, dwell_s=0.03)
            assert wait_until(lambda: fires.ids == [100, 104], 1.0)
            final = trigger.stats()
    assert down["connected"] is False and down["faults"]["link_down"] == 1
    assert after["trigger_id"] == 103 and after["missed"] == 3 and after["stale_changes"] == 1
    assert final["fires"] == 2 and final["missed"] == 3 and final["faults"]["link_down"] == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_plc_is_a_counted_fault_and_its_id_at_power_up_does_not_fire():
    fires = FireRecorder()
    sim = SimPlc(port=free_port(), first_trigger_id=900)
    plc = link(sim.port)
    plc.start()
    trigger = PlcTrigger(plc, fires, poll_s=0.01)
    try:
        assert wait_until(lambda: trigger.stats()["state"] == "link_down", 2.0)
        time.sleep(0.3)
        dead = trigger.stats()
        sim.start()
        present(sim, dwell_s=0.02)  # before the agent is connected: id 900 is already in the register
        assert wait_until(lambda: trigger.stats()["state"] == "polling", 5.0)
        time.sleep(0.1)
        assert fires.ids == []
        present(sim, dwell_s=0.03)
        assert wait_until(lambda: fires.ids == [901], 1.0)
    finally:
        trigger.close()
        plc.close()
        sim.stop()
    assert dead["connected"] is False and dead["faults"]["link_down"] == 1 and dead["fires"] == 0
    assert dead["polls"] > 10  # it kept polling (failing fast) rather than hanging


@pytest.mark.parametrize("source", ["register", "coil"])
def test_part_present_mode_fires_on_the_rising_edge_and_echoes_no_plc_id(source):
    fires = FireRecorder()
    with SimPlc() as sim, link(sim.port) as plc:
        with polling(plc, fires, poll_s=0.01, fire_on="part_present", present_from_coil=source == "coil") as trigger:
            for n in range(1, 4):
                sim.present_part()
                assert wait_until(lambda: len(fires.calls) == n, 1.0)
                time.sleep(0.05)  # held high: still one fire
                assert len(fires.calls) == n
                sim.clear_part()
                time.sleep(0.05)
            stats = trigger.stats()
    assert fires.ids == [None, None, None]
    assert stats["fire_on"] == "part_present" and stats["fires"] == 3 and stats["part_present"] is False


def test_the_trigger_polls_over_modbus_rtu_too(pty_pair):  # noqa: F811
    agent_end, plc_end = pty_pair
    fires = FireRecorder()
    with SimPlc(serial_port=plc_end, baudrate=115200, parity="N", first_trigger_id=31) as sim, \
            ModbusPlc(RtuLink(agent_end, baudrate=115200, parity="N"), timeout_s=0.5) as plc:
        with polling(plc, fires, poll_s=0.02) as trigger:
            for _ in range(3):
                present(sim, dwell_s=0.05)
                assert wait_until(lambda: len(fires.calls) == len(sim.presented), 1.0), trigger.stats()
            stats = trigger.stats()
    assert fires.ids == [31, 32, 33] and stats["missed"] == 0 and stats["faults"]["read_errors"] == 0


def signal(trigger_id: int, t: float, present: bool = True) -> PartSignal:
    return PartSignal(present, trigger_id, t)


def test_tracker_baselines_resets_and_gaps():
    tracker = PartTracker(stale_after_s=0.25)
    assert not tracker.observe(signal(41, 0.00), generation=1)  # first reading: baseline only
    assert tracker.observe(signal(42, 0.01), generation=1)
    assert not tracker.observe(signal(42, 0.02), generation=1)
    assert not tracker.observe(signal(7, 0.03), generation=1)  # backwards: the PLC reset its count
    assert tracker.counters["id_resets"] == 1
    assert tracker.observe(signal(8, 0.04), generation=1)
    assert not tracker.observe(signal(10, 0.50), generation=1)  # seen only after a 0.46 s polling gap
    assert not tracker.observe(signal(11, 0.51), generation=2)  # the first reading on a new link
    assert tracker.observe(signal(12, 0.52), generation=2)
    assert tracker.counters == {"fires": 3, "missed": 3, "stale_changes": 2, "id_resets": 1}
    wrap = PartTracker()
    wrap.observe(signal(0xFFFF_FFFE, 0.0), 1)
    assert wrap.observe(signal(0xFFFF_FFFF, 0.01), 1)
    assert not wrap.observe(signal(0, 0.02), 1) and wrap.counters["id_resets"] == 1


@pytest.mark.timeout(240)
def test_parts_triggered_by_the_plc_each_get_a_result_and_an_event_with_their_own_trigger_id():
    """The whole line: SimPlc raises part present per part, the agent polls it, inspects with the
    shipped INT8 model, and writes each result with the PLC's id as the inspection id echo."""
    settings = CellSettings(seed=808, trigger="plc", belt=BeltSettings(parts_per_minute=300))
    with SimulatedCell(settings) as cell:
        parts = cell.make_parts(30)
        card = cell.run(parts)
        print("\n" + card.render())
        raw_results = cell.plc.results_by_trigger_id()
        events = cell.events_by_id()
        health = cell.app.health()
    ids = [p.trigger_id for p in parts]
    assert ids == list(range(PLC_FIRST_TRIGGER_ID, PLC_FIRST_TRIGGER_ID + 30))
    assert set(raw_results) == set(ids), "every part has a result under its own trigger id, and nothing else"
    for part in parts:
        result = raw_results[part.trigger_id]
        assert result.valid and result.trigger_id >= part.trigger_id  # newest id counted at write time
        event = events[part.index]
        jsonschema.validate(event, EVENT_SCHEMA)
        assert event["inspection_id"] == part.trigger_id and event["trigger"]["plc_trigger_id"] == part.trigger_id
        assert event["trigger"]["source"] == "plc" and (event["result"] != "pass") == result.reject
    assert card.no_result == 0 and card.late == 0
    assert card.missed_critical == 0 and card.false_reject_rate <= 0.05, card.render()
    trigger = health["triggers"][LINE]
    assert trigger["type"] == "plc" and trigger["fires"] == 30 and trigger["missed"] == 0
    assert health["lines"][LINE]["inspections"] == 30


EXAMPLE = Path(__file__).resolve().parents[1] / "provisioning" / "inspection.example.yaml"


def _config(tmp_path, trigger: str, registers: str = "") -> Path:
    text = EXAMPLE.read_text().replace("../models/", str(EXAMPLE.parent.parent / "models") + "/")
    start, end = text.index("    trigger:\n"), text.index("    default_threshold")
    text = text[:start] + trigger + text[end:]
    text = text.replace("    reject_coil: 10       # written last: it completes the result for the PLC\n",
                        "    reject_coil: 10\n" + registers)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_takes_a_plc_trigger_and_checks_the_part_signal_registers(tmp_path):
    config = load_config(_config(tmp_path, "    trigger:\n      type: plc\n      poll_ms: 5\n      part_present: coil\n",
                                 "    part_present_coil: 20\n"))
    trigger = config.lines["inspect"].trigger
    assert (trigger.type, trigger.fire_on, trigger.poll_ms, trigger.part_present) == ("plc", "trigger_id", 5, "coil")
    assert config.plc.registers.part_present_coil == 20 and config.plc.registers.plc_trigger_id == 113
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, "    trigger:\n      type: plc\n", "    plc_trigger_id: 106\n"))
    message = str(info.value)
    assert "config.yaml:" in message and "plc.registers: plc_trigger_id=106 overlaps the registers the agent writes" \
        in message
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, "    trigger:\n      type: plc\n      fire_on: id\n"))
    assert "lines.inspect.trigger.fire_on: input should be 'trigger_id' or 'part_present'" in str(info.value)
