"""The inspection line end to end on the simulator: real mosquitto, a pymodbus TCP server,
gpiozero mock pins, an HTTP camera and OpenVINO on the shipped INT8 IR."""

from __future__ import annotations

import logging
import time

import pytest

from hw_sim.conveyor import BeltSettings
from hw_sim.harness import DEVICE_ID, LINE, REJECT_PIN, CellSettings, SimulatedCell

pytestmark = pytest.mark.timeout(240)


def _rising_edges(pin) -> int:
    return sum(1 for before, after in zip(pin.states, pin.states[1:]) if after.state and not before.state)


def test_200_parts_end_to_end():
    with SimulatedCell(CellSettings(seed=777, belt=BeltSettings(parts_per_minute=400))) as cell:
        parts = cell.make_parts(200)
        card = cell.run(parts)
        print("\n" + card.render())
        results = cell.results_by_id()
        events = cell.events_by_id()
        crops = cell.recorder.messages(f"edge/{DEVICE_ID}/crops/{LINE}/")
        reject_pulses = _rising_edges(cell.pins.pin(REJECT_PIN))
        health = cell.app.health()

    assert card.critical >= 20, "the scene should contain critical defects"
    by_part = {p.index: p for p in parts}
    missed_critical = [i for i, p in by_part.items() if p.critical and not results[i].reject]
    assert missed_critical == [], f"critical defects passed: parts {missed_critical}"
    assert card.no_result == 0
    assert card.false_reject_rate <= 0.02, card.render()
    assert card.late == 0, "every result must reach the PLC before the part reaches the reject station"

    # every event, by inspection id, reached the independent subscriber, and says what the PLC got
    assert set(events) == set(by_part)
    for inspection_id, event in events.items():
        assert event["result"] in ("pass", "reject", "no_read")
        assert (event["result"] != "pass") == results[inspection_id].reject
        assert event["device_id"] == DEVICE_ID and event["schema"] == 1
    # one JPEG crop per reported defect, linked to its event
    expected_crops = sum(min(len(e["defects"]), 8) for e in events.values())
    assert len(crops) == expected_crops
    for crop in crops[:20]:
        assert crop.content_type == "image/jpeg" and crop.payload[:2] == b"\xff\xd8"
        assert crop.user_properties["event_id"] in {e["event_id"] for e in events.values()}
    # the reject arm was pulsed once per rejected part
    assert reject_pulses == sum(r.reject for r in results.values())
    assert health["lines"][LINE]["inspections"] == 200


def test_broker_down_at_start_line_keeps_rejecting(caplog):
    caplog.set_level(logging.INFO, logger="agent")
    with SimulatedCell(CellSettings(seed=31), broker_up=False) as cell:
        parts = cell.make_parts(30)
        card = cell.run(parts, settle_s=3)
        assert card.no_result == 0  # actions never waited on the network
        assert card.late == 0
        assert card.rejected_correct + card.rejected_wrong > 0  # and it kept rejecting
        assert not cell.app.publisher.connected
        assert any("mqtt" in r.name and r.levelno >= logging.WARNING for r in caplog.records), "broker state not logged"

        cell.broker.start()  # the broker comes back: the events queued meanwhile arrive
        cell.recorder.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(cell.events_by_id()) < 30:
            time.sleep(0.2)
        assert set(cell.events_by_id()) == {p.index for p in parts}


@pytest.mark.parametrize("fault", ["http_error", "garbage", "stall"])
def test_unreadable_frame_is_a_counted_no_read_and_rejects(fault):
    with SimulatedCell(CellSettings(seed=55, belt=BeltSettings(parts_per_minute=120))) as cell:
        parts = cell.make_parts(6)
        cell.camera.inject(fault, count=1)  # the first part's frame is lost
        card = cell.run(parts)
        first = cell.results_by_id()[parts[0].index]
        health = cell.app.health()["lines"][LINE]
        event = cell.events_by_id()[parts[0].index]
    assert first.result_code == 3 and first.reject
    assert event["result"] == "no_read"
    assert health["no_reads"] == 1
    assert card.no_result == 0 and card.no_reads == 1


def test_stop_finishes_the_inspection_in_flight():
    with SimulatedCell(CellSettings(seed=8)) as cell:
        part = cell.make_parts(1)[0]
        cell.camera.show(part.jpeg)
        pin = cell.pins.pin(17)
        pin.drive_high()
        pin.drive_low()
        cell.app.stop()  # straight after the trigger
        results = cell.results_by_id()
        assert list(results) == [part.index]
        events = cell.recorder.wait_for(lambda msgs: any("/events/" in m.topic for m in msgs), timeout=5)
        assert any(m.json()["inspection_id"] == part.index for m in events if "/events/" in m.topic)
