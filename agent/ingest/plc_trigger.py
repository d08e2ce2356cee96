"""The PLC trigger: polls the PLC's part signal over Modbus and fires the line for each new part.

    [poll thread] every poll_s: plc.read_part_signal() -> PartTracker.observe() -> on_fire(t, plc_trigger_id=id)

With `fire_on="trigger_id"` (the default) a part is a new value of the PLC's trigger id
register, which the PLC increments for every part it sends to the camera. A part-present
pulse shorter than the poll period would be lost if only the level were watched; the id is
not. A jump of more than one fires once, for the newest id (that part is at the camera now),
and counts the ids in between as missed. With `fire_on="part_present"` the rising edge of the
part-present level fires and the line echoes its own sequence number (a PLC without an id).

Never a false or a late trigger: the first reading, the first reading after the link came
back, and a change seen after a gap in polling longer than `stale_after_s` only set the
baseline; the ids that went by meanwhile are counted as missed, and the PLC's own fail-safe
rejects those parts (they never get a result with their id). An id that goes backwards (the
PLC reset its counter) fires nothing and is counted. A dead PLC is a counted outage.

All Modbus access goes through agent.act.plc.ModbusPlc (the only pymodbus importer).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Literal, Protocol

from ..act.plc import PartSignal

log = logging.getLogger(__name__)

_U32 = 0x1_0000_0000

FireOn = Literal["trigger_id", "part_present"]


class PartSignalReader(Protocol):
    """What the trigger needs from the PLC link (agent.act.plc.ModbusPlc)."""

    @property
    def connected(self) -> bool: ...

    @property
    def link_generation(self) -> int: ...

    def read_part_signal(self, present_from_coil: bool = False) -> PartSignal | None: ...


class PartTracker:
    """Decides, reading by reading, whether the PLC has sent a new part. Pure logic, no I/O."""

    def __init__(self, fire_on: FireOn = "trigger_id", stale_after_s: float = 0.25):
        if fire_on not in ("trigger_id", "part_present"):
            raise ValueError(f"fire_on must be 'trigger_id' or 'part_present', got {fire_on!r}")
        self.fire_on = fire_on
        self.stale_after_s = stale_after_s
        self.trigger_id: int | None = None
        self.present: bool | None = None
        self._generation: int | None = None
        self._last_t: float | None = None
        self.counters = dict.fromkeys(("fires", "missed", "stale_changes", "id_resets"), 0)

    def observe(self, signal: PartSignal, generation: int) -> bool:
        """True if this reading is a new part that is at the camera now."""
        fresh = generation != self._generation or self._last_t is None \
            or signal.t_mono - self._last_t > self.stale_after_s
        previous_id, previous_present = self.trigger_id, self.present
        self.trigger_id, self.present = signal.trigger_id, signal.present
        self._generation, self._last_t = generation, signal.t_mono
        if previous_id is None:
            return False  # the first reading is the baseline
        if self.fire_on == "part_present":
            if not signal.present or previous_present:
                return False
            if fresh:
                self.counters["stale_changes"] += 1
                self.counters["missed"] += 1
                return False
            self.counters["fires"] += 1
            return True
        if signal.trigger_id == previous_id:
            return False
        step = (signal.trigger_id - previous_id) % _U32
        if step >= _U32 // 2 or signal.trigger_id == 0:
            self.counters["id_resets"] += 1  # went backwards: the PLC restarted its count
            return False
        if fresh:
            # The link was down or polling stalled: these parts may have left the camera already.
            self.counters["stale_changes"] += 1
            self.counters["missed"] += step
            return False
        self.counters["missed"] += step - 1
        self.counters["fires"] += 1
        return True


class PlcTrigger:
    """Polls the part signal on its own thread and calls `on_fire(t_mono, plc_trigger_id=...)`."""

    def __init__(self, plc: PartSignalReader, on_fire: Callable[..., object], *, poll_s: float = 0.01,
                 fire_on: FireOn = "trigger_id", present_from_coil: bool = False, stale_after_s: float = 0.25,
                 name: str = "plc"):
        if poll_s <= 0:
            raise ValueError("poll period must be positive")
        self._plc = plc
        self._on_fire = on_fire
        self._poll_s = poll_s
        self._present_from_coil = present_from_coil
        self._tracker = PartTracker(fire_on, max(stale_after_s, 2 * poll_s))
        self._name = name
        self._stop = threading.Event()
        self.state = "starting"  # polling, link_down, read_error
        self.faults = dict.fromkeys(("link_down", "read_errors"), 0)
        self.polls = 0
        self._thread = threading.Thread(target=self._run, name=f"{name}-plc-trigger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            signal = self._plc.read_part_signal(self._present_from_coil)
            generation = self._plc.link_generation  # after the read: a reconnect since is seen next poll
            self.polls += 1
            if signal is None:
                self._poll_failed()
            else:
                self._set_state("polling")
                try:
                    if self._tracker.observe(signal, generation):
                        part_id = signal.trigger_id if self._tracker.fire_on == "trigger_id" else None
                        self._on_fire(signal.t_mono, plc_trigger_id=part_id)
                except Exception:  # a bug of ours must not end the trigger
                    log.exception("line %s: PLC trigger failed on trigger id %d", self._name, signal.trigger_id)
            next_at += self._poll_s
            now = time.monotonic()
            if next_at < now:
                # The read took longer than a period (a slow serial link, a loaded box): leave the link
                # a period free for results and the heartbeat rather than polling back to back.
                next_at = now + self._poll_s
            self._stop.wait(next_at - now)

    def _poll_failed(self) -> None:
        if not self._plc.connected:
            if self.state != "link_down":
                self.faults["link_down"] += 1
                log.warning("line %s: PLC trigger: link down; no part is triggered until it is back", self._name)
            self._set_state("link_down")
        else:  # the PLC answered with an exception: the register map does not match its program
            self.faults["read_errors"] += 1
            self._set_state("read_error")

    def _set_state(self, state: str) -> None:
        if state == "polling" and self.state in ("link_down", "read_error"):
            log.info("line %s: PLC trigger: polling again (trigger id %s)", self._name, self._tracker.trigger_id)
        self.state = state

    def stats(self) -> dict:
        tracker = self._tracker
        return {
            "type": "plc", "fire_on": tracker.fire_on, "connected": self._plc.connected, "state": self.state,
            "trigger_id": tracker.trigger_id, "part_present": tracker.present, **tracker.counters,
            "faults": dict(self.faults), "polls": self.polls, "poll_ms": round(self._poll_s * 1000, 3),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
