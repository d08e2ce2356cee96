"""Timed reject on a moving line, and the fail-safe policy that decides each part.

    camera + sensor ---- parts in transit (a FIFO keyed by inspection id) ----> reject station

Every sensor edge registers a part in transit. The part reaches the station either
`travel_s` after its edge (delay mode: distance / belt speed) or once the belt encoder
has advanced `encoder_counts` past the count at its edge (encoder mode: the count is
read from the PLC, so a belt that slows or stops is followed exactly).

Fail-safe: a part passes only if a PASS for its own inspection id arrived at least
`decision_margin_s` before it reaches the station. Anything else (a REJECT, a no read,
no result at all, a result for another id, a result after the deadline) gets the fail
action when the part is at the station: a reject pulse, or the stop-line output.
A frozen or crashed inspection stage can therefore never let a part through.

The part table and the one scheduler thread live here; outputs are passed in.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

log = logging.getLogger(__name__)

_U32 = 0x1_0000_0000
_MAX_IN_TRANSIT = 10_000  # far beyond any real belt; guards memory if the station never fires
_VELOCITY_WINDOW_S = 0.05


class PulseLike(Protocol):
    def pulse(self, seconds: float) -> None: ...


class LatchLike(Protocol):
    def on(self) -> None: ...

    def off(self) -> None: ...


@dataclass(frozen=True)
class RejectTiming:
    mode: Literal["delay", "encoder"] = "delay"
    travel_s: float = 0.6  # delay mode: reject_distance_m / belt_speed_mps
    encoder_counts: int = 300  # encoder mode: counts from the camera to the station
    decision_margin_s: float = 0.02  # a result later than (arrival - margin) is late
    actuator_lead_s: float = 0.0  # fire this much early: the valve and arm take time to move
    pulse_s: float = 0.05
    fail_action: Literal["reject", "stop_line"] = "reject"
    encoder_poll_s: float = 0.005

    def __post_init__(self) -> None:
        if self.mode == "delay" and self.travel_s <= 0:
            raise ValueError("reject timing: travel_s must be > 0 (reject distance / belt speed)")
        if self.mode == "encoder" and self.encoder_counts <= 0:
            raise ValueError("reject timing: encoder_counts must be > 0")
        if self.decision_margin_s < 0 or self.actuator_lead_s < 0 or self.pulse_s <= 0:
            raise ValueError("reject timing: margins must be >= 0 and the pulse > 0")


@dataclass
class _Part:
    part_id: int
    t_entered: float
    due_t: float | None  # delay mode
    start_count: int | None  # encoder mode
    passed: bool | None = None  # None: no (timely) result
    late: bool = False


@dataclass(frozen=True)
class Firing:
    """What the station did with one part (kept for health and the benchmark)."""

    part_id: int
    action: Literal["pass", "reject", "fail_safe"]  # fail_safe: no timely PASS and no timely REJECT
    due_t: float | None  # when the part was due at the station (delay mode)
    fired_t: float


class RejectTimer:
    """Parts in transit between the camera and the reject station, and the station's actions."""

    def __init__(self, timing: RejectTiming, reject_output: PulseLike | None, stop_output: LatchLike | None = None,
                 encoder: Callable[[], int | None] | None = None, name: str = "line",
                 on_fire: Callable[[Firing], None] | None = None):
        if timing.mode == "encoder" and encoder is None:
            raise ValueError("reject timing in encoder mode needs an encoder (the PLC's encoder register)")
        if timing.fail_action == "stop_line" and stop_output is None:
            raise ValueError("reject timing: fail_action stop_line needs a stop-line output")
        self.timing = timing
        self._reject_output = reject_output
        self._stop_output = stop_output
        self._encoder = encoder
        self._name = name
        self._on_fire = on_fire
        self._lock = threading.Condition()
        self._parts: dict[int, _Part] = {}
        self._due: list[tuple[float, int]] = []  # delay mode heap
        self._order: deque[int] = deque()  # encoder mode: FIFO, parts keep their order on a belt
        self._stopping = False
        self._thread: threading.Thread | None = None
        # encoder samples: (t, unwrapped count); velocity in counts/s
        self._last_sample: tuple[float, int] | None = None
        self._velocity = 0.0
        self._velocity_ref: tuple[float, int] | None = None
        self._encoder_wrap = 0
        self.firings: deque[Firing] = deque(maxlen=5000)
        self.counters = dict.fromkeys(
            ("parts", "passed", "rejected", "fail_safe_rejects", "stop_line", "late_results", "no_result",
             "unknown_results", "encoder_read_failures"), 0)

    # -- lifetime -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        if self.timing.mode == "encoder":
            self._sample_encoder()
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-reject-timer", daemon=True)
        self._thread.start()

    def close(self, drain_s: float = 2.0) -> None:
        """Let the parts already in transit reach the station (up to drain_s), then stop."""
        deadline = time.monotonic() + drain_s
        with self._lock:
            while self._parts and time.monotonic() < deadline and self._thread is not None:
                self._lock.wait(0.02)
            left = len(self._parts)
            self._stopping = True
            self._lock.notify_all()
        if left:
            log.warning("line %s: %d parts still in transit at shutdown; not acted on", self._name, left)
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    # -- the line's side ----------------------------------------------------------------
    def part_entered(self, part_id: int, t_mono: float) -> None:
        """A part passed the sensor at t_mono. Called from the sensor's thread: returns at once."""
        with self._lock:
            if len(self._parts) >= _MAX_IN_TRANSIT:
                log.error("line %s: %d parts in transit; the reject station is not firing", self._name, len(self._parts))
                return
            if self.timing.mode == "delay":
                part = _Part(part_id, t_mono, t_mono + self.timing.travel_s, None)
                heapq.heappush(self._due, (part.due_t, part_id))
            else:
                part = _Part(part_id, t_mono, None, self._count_at(t_mono))
                self._order.append(part_id)
            self._parts[part_id] = part
            self.counters["parts"] += 1
            self._lock.notify_all()

    def result(self, part_id: int, passed: bool) -> bool:
        """The inspection's verdict for part_id. True if it arrived in time to decide the part.

        False: the part already passed its decision point (or is unknown); it gets the fail
        action at the station (or already got it), and the caller reports the result as late.
        """
        now = time.monotonic()
        with self._lock:
            part = self._parts.get(part_id)
            if part is None:
                self.counters["unknown_results"] += 1
                self.counters["late_results"] += 1
                return False
            if now > self._decision_deadline(part):
                part.late = True
                self.counters["late_results"] += 1
                return False
            part.passed = passed
            return True

    def in_transit(self) -> int:
        with self._lock:
            return len(self._parts)

    def stats(self) -> dict:
        with self._lock:
            errors = sorted(abs(f.fired_t - f.due_t) * 1000 for f in self.firings if f.due_t is not None)
            return {**self.counters, "in_transit": len(self._parts), "mode": self.timing.mode,
                    "fire_error_ms_p99": round(errors[int(0.99 * (len(errors) - 1))], 2) if errors else None}

    # -- timing -------------------------------------------------------------------------
    def _decision_deadline(self, part: _Part) -> float:
        if part.due_t is not None:
            return part.due_t - self.timing.actuator_lead_s - self.timing.decision_margin_s
        remaining = self.timing.encoder_counts - (self._count_at(time.monotonic()) - part.start_count)
        if self._velocity <= 0:
            return float("inf") if remaining > 0 else 0.0  # a stopped belt: the part is not moving
        return time.monotonic() + remaining / self._velocity - self.timing.actuator_lead_s - self.timing.decision_margin_s

    def _sample_encoder(self) -> None:
        raw = self._encoder()
        now = time.monotonic()
        if raw is None:
            self.counters["encoder_read_failures"] += 1
            return
        if self._last_sample is not None and raw < (self._last_sample[1] % _U32) - _U32 // 2:
            self._encoder_wrap += _U32
        count = raw + self._encoder_wrap
        self._last_sample = (now, count)
        if self._velocity_ref is None:
            self._velocity_ref = (now, count)
        elif now - self._velocity_ref[0] >= _VELOCITY_WINDOW_S:
            self._velocity = (count - self._velocity_ref[1]) / (now - self._velocity_ref[0])
            self._velocity_ref = (now, count)

    def _count_at(self, t: float) -> int:
        """The belt position at t, extrapolated from the last encoder sample."""
        if self._last_sample is None:
            return 0
        t0, count = self._last_sample
        return int(count + self._velocity * (t - t0))

    # -- the station --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            due: list[_Part] = []
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                if self.timing.mode == "delay":
                    lead = self.timing.actuator_lead_s
                    while self._due and self._due[0][0] - lead <= now:
                        _, part_id = heapq.heappop(self._due)
                        due.append(self._parts.pop(part_id))
                    if not due:
                        wait = (self._due[0][0] - lead - now) if self._due else 1.0
                        self._lock.wait(min(max(wait, 0.0), 1.0))
                        continue
                else:
                    if self._last_sample is None or now - self._last_sample[0] >= self.timing.encoder_poll_s:
                        self._lock.release()  # a Modbus read: never under the lock the line takes
                        try:
                            self._sample_encoder()
                        finally:
                            self._lock.acquire()
                    # Between samples the position is extrapolated, so a part fires on time rather
                    # than on the next poll.
                    lead_counts = self.timing.actuator_lead_s * self._velocity
                    position = self._count_at(time.monotonic())
                    while self._order and self._parts[self._order[0]].start_count + self.timing.encoder_counts \
                            - lead_counts <= position:
                        due.append(self._parts.pop(self._order.popleft()))
                    if not due:
                        wait = self.timing.encoder_poll_s
                        if self._order and self._velocity > 0:
                            head = self._parts[self._order[0]]
                            remaining = head.start_count + self.timing.encoder_counts - lead_counts - position
                            wait = min(wait, remaining / self._velocity)
                        self._lock.wait(max(wait, 0.0))
                        continue
                self._lock.notify_all()
            for part in due:
                self._fire(part)

    def _fire(self, part: _Part) -> None:
        fired = time.monotonic()
        if part.passed is True:
            action = "pass"
            self.counters["passed"] += 1
        elif part.passed is False:
            action = "reject"
            self.counters["rejected"] += 1
            if self._reject_output is not None:
                self._reject_output.pulse(self.timing.pulse_s)
        else:
            action = "fail_safe"
            self.counters["fail_safe_rejects"] += 1
            if not part.late:
                self.counters["no_result"] += 1
            if self.timing.fail_action == "stop_line":
                self.counters["stop_line"] += 1
                self._stop_output.on()  # latched: an operator clears the part and resets the line
                log.error("line %s: part %d reached the station without a timely result: line stopped",
                          self._name, part.part_id)
            elif self._reject_output is not None:
                self._reject_output.pulse(self.timing.pulse_s)
        firing = Firing(part.part_id, action, part.due_t, fired)
        self.firings.append(firing)
        if self._on_fire is not None:
            self._on_fire(firing)
