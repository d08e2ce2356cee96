"""A conveyor that carries rendered parts past a camera and a photoelectric sensor.

Geometry (metres, metres per second):

    camera + sensor ---- reject_distance_m ----> reject station
    parts arrive every 60 / parts_per_minute seconds

When a part reaches the camera the camera starts showing it and the sensor input goes high
(gpiozero MockPin.drive_high: the same callbacks real hardware fires), or, on a PLC-triggered
line, the PLC raises part present with the part's trigger id (hw_sim.plc.PartSensor). The part is in view for
`dwell_s`; it reaches the reject station reject_distance_m / belt_speed_mps after its edge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .camera import SimCamera, encode_jpeg
from .scene import Defect, PartRenderer


@dataclass
class Part:
    index: int  # 1-based: the n-th sensor edge, which the agent numbers as inspection n
    defects: tuple[Defect, ...]
    jpeg: bytes = field(repr=False)
    t_edge: float | None = None  # monotonic time of the sensor's rising edge
    t_at_station: float | None = None  # when it reaches the reject station
    trigger_id: int | None = None  # the PLC's trigger id, on a PLC-triggered line

    @property
    def good(self) -> bool:
        return not self.defects

    @property
    def critical(self) -> bool:
        return any(d.severity == "critical" for d in self.defects)


@dataclass(frozen=True)
class BeltSettings:
    parts_per_minute: float = 400.0
    belt_speed_mps: float = 0.5
    reject_distance_m: float = 0.2
    dwell_s: float = 0.08  # how long the part stays under the camera and sensor

    @property
    def pitch_s(self) -> float:
        return 60.0 / self.parts_per_minute

    @property
    def travel_s(self) -> float:
        return self.reject_distance_m / self.belt_speed_mps


class Conveyor:
    def __init__(self, renderer: PartRenderer, camera: SimCamera, sensor_pin, belt: BeltSettings = BeltSettings()):
        if belt.dwell_s >= belt.pitch_s:
            raise ValueError("dwell_s must be shorter than the time between parts")
        self._renderer = renderer
        self._camera = camera
        self._sensor = sensor_pin
        self.belt = belt
        self._empty = encode_jpeg(renderer.render_empty_belt())
        camera.show(self._empty)

    def make_parts(self, count: int, first_index: int = 1) -> list[Part]:
        parts = []
        for i in range(count):
            rendered = self._renderer.render()
            parts.append(Part(first_index + i, rendered.defects, encode_jpeg(rendered.image)))
        return parts

    def run(self, parts: list[Part], progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> list[Part]:
        """Move `parts` past the camera in real time. Blocks until the last one has passed."""
        start = time.monotonic() + 0.05
        for n, part in enumerate(parts):
            if should_stop():
                break
            _sleep_until(start + n * self.belt.pitch_s)
            self._camera.show(part.jpeg)
            part.t_edge = time.monotonic()
            part.t_at_station = part.t_edge + self.belt.travel_s
            part.trigger_id = self._sensor.drive_high()  # a MockPin returns None; the PLC its trigger id
            _sleep_until(part.t_edge + self.belt.dwell_s)
            self._sensor.drive_low()
            self._camera.show(self._empty)
            if progress:
                progress(n + 1, len(parts))
        return parts


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


@dataclass(frozen=True)
class Kick:
    t: float  # monotonic time the gate's arm fired (rising edge of the reject output)
    part_index: int | None  # the part in front of the gate then; None: it hit an empty belt
    error_ms: float | None  # t - the part's leading edge reaching the gate


class RejectGate:
    """The reject station's arm, driven by the agent's reject output (a gpiozero MockPin).

    The arm kicks whatever is in front of it while it is out: a part occupies the gate from
    when its leading edge arrives (t_at_station) for dwell_s (its length / belt speed). A
    pulse that overlaps no part kicks nothing, and one that overlaps the wrong part kicks that.
    """

    def __init__(self, pin, belt: BeltSettings, pulse_s: float):
        self._pin = pin
        self._belt = belt
        self._pulse_s = pulse_s

    def fire_times(self) -> list[float]:
        # MockPin.states holds the time since the previous change; rebuild absolute times from the last one.
        states = list(self._pin.states)
        times, t = [], self._pin._last_change
        for state in reversed(states):
            times.append(t)
            t -= state.timestamp
        times.reverse()
        return [times[i] for i in range(1, len(states)) if states[i].state and not states[i - 1].state]

    def kicks(self, parts: list[Part]) -> list[Kick]:
        at_gate = sorted((p.t_at_station, p.index) for p in parts if p.t_at_station is not None)
        kicks = []
        for t in self.fire_times():
            hit = None
            for t_at, index in at_gate:
                if t < t_at + self._belt.dwell_s and t + self._pulse_s > t_at:
                    if hit is None or abs(t - t_at) < abs(t - hit[0]):
                        hit = (t_at, index)
            kicks.append(Kick(t, hit[1] if hit else None, (t - hit[0]) * 1000 if hit else None))
        return kicks
