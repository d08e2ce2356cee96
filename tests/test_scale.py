"""The serial scale trigger: protocol parsing, the settle-and-change rule, and a simulated scale
on a real pty that injects garbage, bad checksums, overload, endless motion and disconnects."""

from __future__ import annotations

import random
import time

import pytest

from agent.ingest.scale import ScaleTrigger, StableChange
from agent.ingest.scale_protocols import (
    BUSY, DYNAMIC, ERROR, OVERLOAD, STABLE, UNDERLOAD, ProtocolError, ScaleReading, ToledoFramer, parse_mtsics,
    toledo_checksum,
)
from agent.serial_port import SerialError, SerialPort
from hw_sim.scale import SimScale, toledo_frame


# -- MT-SICS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    (b"S S     100.00 g", ScaleReading(STABLE, 100.0)),
    (b"S D     100.02 g", ScaleReading(DYNAMIC, 100.02)),
    (b"S S      -0.35 g", ScaleReading(STABLE, -0.35)),
    (b"S S      1.250 kg", ScaleReading(STABLE, 1250.0)),
    (b"S S   0.5 lb", ScaleReading(STABLE, 226.796185)),
])
def test_mtsics_weights(line, expected):
    reading = parse_mtsics(line)
    assert reading.status == expected.status and reading.weight_g == pytest.approx(expected.weight_g)


@pytest.mark.parametrize("line, status", [
    (b"S I", BUSY), (b"S +", OVERLOAD), (b"S -", UNDERLOAD), (b"ES", ERROR), (b"ET", ERROR), (b"EL", ERROR),
])
def test_mtsics_status_replies(line, status):
    reading = parse_mtsics(line)
    assert reading.status == status and reading.weight_g is None


@pytest.mark.parametrize("line, kind", [
    (b"S S     1#0.00 g", "garbage"), (b"\xff\xfe S S 1 g", "garbage"), (b"", "garbage"),
    (b"S X     100.00 g", "garbage"), (b"S S     100.00 furlong", "garbage"), (b"S S     100.00 dr", "unit"),
])
def test_mtsics_rejects_what_is_not_a_reply(line, kind):
    with pytest.raises(ProtocolError) as info:
        parse_mtsics(line)
    assert info.value.kind == kind


# -- Toledo continuous -------------------------------------------------------------------

def test_toledo_frame_layout_matches_the_spec():
    frame = toledo_frame(1234.5, decimals=1)
    assert len(frame) == 18 and frame[0] == 0x02 and frame[16] == 0x0D
    assert frame[4:10] == b"012345" and frame[10:16] == b"000000"
    assert (sum(frame[:17]) + frame[17]) & 0x7F == 0
    assert toledo_checksum(frame[:17]) == frame[17]


def test_toledo_framer_decodes_split_frames_and_statuses():
    framer = ToledoFramer()
    stream = toledo_frame(250.0) + toledo_frame(251.3, moving=True) + toledo_frame(-2.0) + toledo_frame(0, overload=True)
    readings = []
    for i in range(0, len(stream), 7):  # bytes arrive in arbitrary pieces
        readings += framer.feed(stream[i:i + 7])
    assert [(r.status, r.weight_g) for r in readings] == [
        (STABLE, 250.0), (DYNAMIC, pytest.approx(251.3)), (STABLE, -2.0), (OVERLOAD, None)]


def test_toledo_framer_units_decimals_and_parity_bits():
    swa, swb, swc = 0x20 | 0x08 | 4, 0x20 | 0x10, 0x20  # xxxx.xx, kg
    body = bytes([0x02, swa, swb, swc]) + b"001250" + b"000000" + b"\r"
    frame = body + bytes([toledo_checksum(body)])
    with_parity = bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in frame)  # 7E1 seen through 8N1
    for data in (frame, with_parity):
        (reading,) = ToledoFramer().feed(data)
        assert reading.status == STABLE and reading.weight_g == pytest.approx(12500.0)  # 12.50 kg


def test_toledo_framer_resynchronises_after_garbage_and_bad_checksums():
    framer = ToledoFramer()
    good = toledo_frame(100.0)
    bad = toledo_frame(999.0, corrupt_checksum=True)
    items = framer.feed(b"\x13\x99noise" + bad + good + good[:5] + b"\x02xx" + good)
    errors = [i.kind for i in items if isinstance(i, ProtocolError)]
    readings = [i for i in items if isinstance(i, ScaleReading)]
    assert [r.weight_g for r in readings] == [100.0, 100.0]
    assert "checksum" in errors and "garbage" in errors


def test_toledo_framer_without_checksum():
    frame = toledo_frame(42.0, checksum=False)
    (reading,) = ToledoFramer(checksum=False).feed(frame)
    assert reading.weight_g == 42.0


# -- the settle-and-change rule -------------------------------------------------------------

def stable(w):
    return ScaleReading(STABLE, w)


def test_stable_change_fires_once_per_settled_change():
    rule = StableChange(threshold_g=5.0, direction="increase", confirm=2)
    readings = [stable(0.0), stable(0.1),  # the reference: no fire at start
                ScaleReading(DYNAMIC, 120.0), stable(248.0), stable(250.0), stable(250.0), stable(250.1),
                ScaleReading(DYNAMIC, 300.0), stable(253.0), stable(253.0),  # +3 g: under the threshold
                ScaleReading(OVERLOAD), stable(253.0), stable(253.0),  # overload and back: nothing changed
                stable(0.0), stable(0.0),  # taken off: a decrease
                stable(400.0), stable(400.0)]
    fired = [w for w in (rule.update(r) for r in readings) if w is not None]
    assert fired == [250.0, 400.0]


def test_stable_change_needs_agreeing_stable_readings():
    rule = StableChange(threshold_g=5.0, confirm=3)
    for w in (0.0, 0.0, 0.0):
        rule.update(stable(w))
    assert [rule.update(stable(w)) for w in (80.0, 150.0, 150.0, 150.0)] == [None, None, None, 150.0]


@pytest.mark.parametrize("direction, expected", [("increase", [300.0]), ("decrease", [100.0]), ("any", [300.0, 100.0])])
def test_stable_change_direction(direction, expected):
    rule = StableChange(threshold_g=5.0, direction=direction, confirm=1)
    fired = [rule.update(stable(w)) for w in (200.0, 300.0, 100.0)]
    assert [w for w in fired if w is not None] == expected


# -- a simulated scale on a real pty ----------------------------------------------------------

def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Cell:
    """A SimScale and the agent's ScaleTrigger reading it through the pty."""

    def __init__(self, tmp_path, protocol: str, **trigger_options):
        self.fires: list[tuple[float, float]] = []
        self.changes: list[float] = []
        self.sim = SimScale(tmp_path / f"scale-{protocol}", protocol=protocol, settle_s=0.3)
        self.sim.start()
        options = dict(threshold_g=5.0, reply_timeout_s=0.3, unstable_after_s=1.0)
        options.update(trigger_options)
        self.trigger = ScaleTrigger(SerialPort(str(self.sim.link), timeout_s=0.05), protocol,
                                    self._fired, **options)
        assert wait_until(lambda: self.trigger.stats()["reference_g"] is not None), self.trigger.stats()

    def _fired(self, t: float, weight_g: float, weight_change_g: float) -> None:
        self.fires.append((t, weight_g))
        self.changes.append(weight_change_g)

    def weights(self) -> list[float]:
        return [round(w, 1) for _, w in self.fires]

    def close(self):
        self.trigger.close()
        self.sim.stop()


@pytest.fixture(params=["mtsics", "toledo"])
def cell(request, tmp_path):
    made = Cell(tmp_path, request.param)
    try:
        yield made
    finally:
        made.close()


def test_placing_a_weight_fires_once_with_the_stable_weight(cell):
    cell.sim.place(250.0)
    assert wait_until(lambda: cell.fires, 5)
    time.sleep(0.5)
    assert cell.weights() == [250.0]
    stats = cell.trigger.stats()
    assert stats["state"] == "stable" and stats["weight_g"] == pytest.approx(250.0) and stats["fires"] == 1


def test_each_fire_carries_the_change_from_the_weight_settled_before(cell):
    """What was put on the scale: the second item alone, and after a removal (no fire, direction
    increase) the change from the lower weight the scale settled at."""
    for weight, fires in ((250.0, 1), (400.0, 2), (100.0, 2), (160.0, 3)):
        cell.sim.place(weight)
        time.sleep(0.6)  # settle_s 0.3, then two agreeing readings
        assert wait_until(lambda: len(cell.fires) == fires and cell.trigger.stats()["reference_g"] == pytest.approx(weight), 5), \
            cell.trigger.stats()
    assert cell.weights() == [250.0, 400.0, 160.0]
    assert [round(c, 1) for c in cell.changes] == [250.0, 150.0, 60.0]


@pytest.mark.parametrize("fault", ["garbage", "bad_checksum", "error", "busy", "no_reply"])
def test_injected_faults_are_counted_and_never_fire(cell, fault):
    if fault in ("error", "busy", "no_reply") and cell.sim.protocol == "toledo":
        pytest.skip("continuous output has no requests to refuse")
    cell.sim.inject(fault, count=5)
    expected = {"garbage": "garbage", "bad_checksum": "checksum" if cell.sim.protocol == "toledo" else "garbage",
                "error": "command_error", "busy": "busy", "no_reply": "no_reply"}[fault]
    assert wait_until(lambda: cell.trigger.stats()["faults"][expected] >= 3, 8), cell.trigger.stats()
    time.sleep(0.3)
    assert cell.fires == []
    assert cell.trigger.stats()["last_fault"].startswith(expected)
    cell.sim.place(120.0)  # still working afterwards
    assert wait_until(lambda: cell.weights() == [120.0], 5), cell.trigger.stats()


def test_overload_shows_in_health_without_firing(cell):
    cell.sim.overload = True
    assert wait_until(lambda: cell.trigger.stats()["state"] == "overload", 3), cell.trigger.stats()
    assert cell.trigger.stats()["faults"]["overload"] >= 1
    cell.sim.overload = False
    assert wait_until(lambda: cell.trigger.stats()["state"] == "stable", 3)
    time.sleep(0.3)
    assert cell.fires == []


def test_a_weight_that_never_settles_is_a_fault_not_a_trigger(cell):
    cell.sim.moving = True  # endless S D / the motion bit
    cell.sim.place(500.0)
    assert wait_until(lambda: cell.trigger.stats()["state"] == "unstable", 4), cell.trigger.stats()
    assert cell.trigger.stats()["faults"]["unstable"] == 1 and cell.fires == []
    cell.sim.moving = False
    assert wait_until(lambda: cell.weights() == [500.0], 5)


def test_a_disconnect_is_survived_and_shown(cell):
    cell.sim.place(80.0)
    assert wait_until(lambda: cell.weights() == [80.0], 5)
    cell.sim.disconnect(down_s=1.0)  # the pty goes away, the link with it, then both come back
    assert wait_until(lambda: cell.trigger.stats()["faults"]["disconnects"] == 1, 5)
    assert wait_until(lambda: cell.trigger.stats()["connected"] and cell.trigger.stats()["connects"] == 2, 10)
    time.sleep(0.5)
    assert cell.weights() == [80.0]  # the same weight after the reconnect is no new trigger
    cell.sim.place(160.0)
    assert wait_until(lambda: cell.weights() == [80.0, 160.0], 5)


def test_a_port_that_is_not_there_is_retried_quietly(tmp_path):
    trigger = ScaleTrigger(SerialPort(str(tmp_path / "ttyUSB9")), "mtsics", lambda t, w, weight_change_g: None)
    try:
        assert wait_until(lambda: trigger.stats()["open_failures"] >= 1, 3)
        stats = trigger.stats()
        assert not stats["connected"] and stats["state"] == "disconnected" and "ttyUSB9" in stats["last_fault"]
    finally:
        trigger.close()
    with pytest.raises(SerialError, match="ttyUSB9"):
        SerialPort(str(tmp_path / "ttyUSB9")).open()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["mtsics", "toledo"])
def test_fault_soak_fires_exactly_once_per_settled_increase(tmp_path, protocol):
    """A minute of placements mixed with every fault: triggers match the placements one to one."""
    rng = random.Random(7)
    cell = Cell(tmp_path, protocol)
    faults = ["garbage", "bad_checksum"] + (["error", "busy", "no_reply"] if protocol == "mtsics" else [])
    expected: list[float] = []
    try:
        weight = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            action = rng.choice(["place", "place", "fault", "fault", "overload", "moving", "disconnect"])
            if action == "place":
                new = round(max(0.0, weight + rng.choice([-1, 1, 1]) * rng.uniform(20, 200)), 1)
                if abs(new - weight) <= 5.0:
                    continue
                if new > weight:
                    expected.append(new)
                weight = new
                cell.sim.place(weight)
                assert wait_until(lambda: cell.trigger.stats()["reference_g"] == pytest.approx(weight, abs=0.05), 8), \
                    cell.trigger.stats()
            elif action == "fault":
                cell.sim.inject(rng.choice(faults), count=rng.randint(1, 5))
                time.sleep(0.5)
            elif action == "overload":
                cell.sim.overload = True
                time.sleep(0.4)
                cell.sim.overload = False
                time.sleep(0.4)
            elif action == "moving":
                cell.sim.moving = True
                time.sleep(1.5)
                cell.sim.moving = False
                time.sleep(0.8)
            else:
                cell.sim.disconnect(down_s=rng.uniform(0.2, 1.5))
                assert wait_until(lambda: cell.trigger.stats()["connected"], 10)
                time.sleep(0.5)
        time.sleep(1.0)
        stats = cell.trigger.stats()
    finally:
        cell.close()
    assert cell.weights() == expected and len(expected) >= 5
    assert stats["fires"] == len(expected)
    assert all(stats["faults"][kind] > 0 for kind in ("garbage", "disconnects", "overload", "unstable"))
