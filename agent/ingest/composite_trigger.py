"""Trigger combinations: all-of within a time window, or any-of. Members are any triggers,
composites included.

    member fires -> [all_of] every member fired within window_s? -> on_fire(latest time, details)
                 -> [any_of] -> on_fire(its time, its details)

Checkout is all_of(motion, scale): a hand moves over the platter and the weight settles at a
new value. The composite fires at the time of the member that completed it, so the line's
frame is the one at or after that moment, and it carries the details its members brought:
the scale's stable weight (and its change), the PLC's trigger id (the latest member's, if several have one).
A member that fired without the others inside the window is counted as `unmatched`.

Members call in from their own threads; the composite holds no thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Literal

log = logging.getLogger(__name__)

Mode = Literal["all_of", "any_of"]


class _Fire:
    __slots__ = ("t_mono", "weight_g", "plc_trigger_id", "weight_change_g")

    def __init__(self, t_mono: float, weight_g: float | None, plc_trigger_id: int | None,
                 weight_change_g: float | None = None):
        self.t_mono, self.weight_g, self.plc_trigger_id = t_mono, weight_g, plc_trigger_id
        self.weight_change_g = weight_change_g


class CompositeTrigger:
    """Build it, pass `member_input(i)` to member i as its on_fire, then `attach()` the members."""

    def __init__(self, mode: Mode, member_count: int, on_fire: Callable[..., object], *,
                 window_s: float | None = None, cooldown_s: float = 0.0, name: str = "composite"):
        if mode not in ("all_of", "any_of"):
            raise ValueError(f"mode must be 'all_of' or 'any_of', got {mode!r}")
        if member_count < 1:
            raise ValueError("a combination needs at least one member")
        if mode == "all_of" and not (window_s and window_s > 0):
            raise ValueError("all_of needs a window_s > 0")
        self.mode = mode
        self._on_fire = on_fire
        self._window_s = window_s or 0.0
        self._cooldown_s = cooldown_s
        self._name = name
        self._lock = threading.Lock()
        self._pending: list[_Fire | None] = [None] * member_count
        self._member_fires = [0] * member_count
        self._last_fire = -1e18
        self._members: list = []
        self.counters = dict.fromkeys(("fires", "unmatched", "cooldown_suppressed"), 0)

    def member_input(self, index: int) -> Callable[..., None]:
        if not 0 <= index < len(self._pending):
            raise IndexError(f"member {index} of {len(self._pending)}")

        def on_member_fire(t_mono: float, weight_g: float | None = None, plc_trigger_id: int | None = None,
                           weight_change_g: float | None = None) -> None:
            self._member_fired(index, _Fire(t_mono, weight_g, plc_trigger_id, weight_change_g))

        return on_member_fire

    def attach(self, members: list) -> None:
        """The built members, in member order: closed with the composite, their stats in its own."""
        self._members = list(members)

    def _member_fired(self, index: int, fire: _Fire) -> None:
        with self._lock:
            self._member_fires[index] += 1
            if fire.t_mono - self._last_fire < self._cooldown_s:
                self.counters["cooldown_suppressed"] += 1
                return
            if self.mode == "any_of":
                fired = [fire]
            else:
                self._expire(fire.t_mono)
                if self._pending[index] is not None:
                    self.counters["unmatched"] += 1  # its earlier fire found no partners
                self._pending[index] = fire
                if any(p is None for p in self._pending):
                    return
                fired = sorted(self._pending, key=lambda p: p.t_mono)
                self._pending = [None] * len(self._pending)
            self._last_fire = fired[-1].t_mono
            self.counters["fires"] += 1
        weigher = next((f for f in reversed(fired) if f.weight_g is not None), None)
        part_id = next((f.plc_trigger_id for f in reversed(fired) if f.plc_trigger_id is not None), None)
        self._on_fire(fired[-1].t_mono, weight_g=weigher and weigher.weight_g, plc_trigger_id=part_id,
                      weight_change_g=weigher and weigher.weight_change_g)

    def _expire(self, now: float) -> None:
        """Drop member fires older than the window (called with the lock held)."""
        for i, pending in enumerate(self._pending):
            if pending is not None and now - pending.t_mono > self._window_s:
                self._pending[i] = None
                self.counters["unmatched"] += 1

    def stats(self) -> dict:
        with self._lock:
            if self.mode == "all_of":
                self._expire(time.monotonic())
            own = {"type": self.mode, **self.counters, "waiting": sum(p is not None for p in self._pending)}
            member_fires = list(self._member_fires)
        if self.mode == "all_of":
            own["window_ms"] = round(self._window_s * 1000, 1)
        own["members"] = [{**(member.stats() if hasattr(member, "stats") else {}), "fires_seen": fires}
                          for member, fires in zip(self._members, member_fires)]
        return own

    def close(self) -> None:
        for member in self._members:
            try:
                member.close()
            except Exception:
                log.exception("line %s: closing a trigger of the combination failed", self._name)
