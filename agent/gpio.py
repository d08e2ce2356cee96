"""gpiozero adapter: the only module that imports gpiozero.

The pin factory is always passed in explicitly (never gpiozero's global default), so the
simulator's MockFactory and a device's real factory go through the same code.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import GPIOZeroError

log = logging.getLogger(__name__)


class GpioError(Exception):
    """A pin that cannot be used; the message names it."""


def make_pin_factory(name: str | None):
    """A gpiozero pin factory by name; None means gpiozero's own choice for this board."""
    if name is None:
        from gpiozero import Device

        try:
            return Device._default_pin_factory()
        except GPIOZeroError as exc:
            raise GpioError(
                f"no GPIO pin factory works on this machine ({exc}); set gpio.pin_factory in the config "
                "(lgpio on a Raspberry Pi 5, mock for the simulator)"
            ) from None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    modules = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
        "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
        "native": ("gpiozero.pins.native", "NativeFactory"),
    }
    module_name, class_name = modules[name]
    try:
        import importlib

        return getattr(importlib.import_module(module_name), class_name)()
    except (ImportError, GPIOZeroError, OSError, RuntimeError) as exc:
        raise GpioError(f"gpio.pin_factory {name!r} does not work here: {exc}") from None


def probe_pins(factory, inputs: list[tuple[str, object, bool]], outputs: list[tuple[str, object]]) -> list[str]:
    """Claim each pin once and let it go: inputs (label, pin, pull_up) as the agent would, outputs
    (label, pin) as inputs without a pull, so a reject arm or a light is never driven. The
    problems (no such pin, in use), one per pin."""
    problems = []
    for label, pin, pull_up, kind in [*((*i, "input") for i in inputs), *((*o, None, "output") for o in outputs)]:
        try:
            DigitalInputDevice(pin, pull_up=pull_up, active_state=None if pull_up is not None else True,
                               pin_factory=factory).close()
        except (GPIOZeroError, ValueError, OSError) as exc:
            problems.append(f"{label} ({kind} {pin}): {exc}")
    return problems


class EdgeInput:
    """Calls `on_edge(t_mono)` on each debounced edge of a digital input.

    Debounce is done here in software: gpiozero's bounce_time is not honoured by every
    backend (the mock factory ignores it), and a sensor that chatters must not make two parts.
    """

    def __init__(self, pin, factory, on_edge: Callable[[float], None], edge: str = "rising",
                 pull_up: bool = False, debounce_s: float = 0.005):
        try:
            self._device = DigitalInputDevice(pin, pull_up=pull_up, pin_factory=factory)
        except (GPIOZeroError, ValueError) as exc:
            raise GpioError(f"input pin {pin!r}: {exc}") from None
        self._on_edge = on_edge
        self._debounce = debounce_s
        self._last = -1e9
        self._lock = threading.Lock()
        self._pin = pin
        self.edges = 0
        self.bounces = 0
        if edge == "rising":
            self._device.when_activated = self._edge
        else:
            self._device.when_deactivated = self._edge

    def _edge(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._debounce:
                self.bounces += 1
                return
            self._last = now
            self.edges += 1
        self._on_edge(now)

    def stats(self) -> dict:
        return {"type": "gpio", "pin": str(self._pin), "edges": self.edges, "bounces": self.bounces}

    def close(self) -> None:
        self._device.close()


_PULSE_GAP_S = 0.005


class PulseOutput:
    """A digital output that emits fixed-length pulses without blocking the caller.

    Every pulse() is its own pulse: one asked for while another is still out follows it
    after at least _PULSE_GAP_S, rather than merging into it, so a PLC or counter that
    counts reject pulses counts every part. The pulses run on a short-lived thread.
    """

    def __init__(self, pin, factory, active_high: bool = True):
        try:
            self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=factory)
        except (GPIOZeroError, ValueError) as exc:
            raise GpioError(f"output pin {pin!r}: {exc}") from None
        self._lock = threading.Lock()
        self._queued: list[float] = []
        self._worker: threading.Thread | None = None
        self._closed = threading.Event()

    def pulse(self, seconds: float) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            if self._worker is not None:
                self._queued.append(seconds)
                return
            self._device.on()  # the edge goes out now, not after a thread start
            self._worker = threading.Thread(target=self._run_pulses, args=(seconds,), name="pulse-output",
                                            daemon=True)
            self._worker.start()

    def _run_pulses(self, seconds: float) -> None:
        while True:
            self._closed.wait(seconds)
            with self._lock:
                if self._closed.is_set():
                    self._worker = None
                    return
                self._device.off()
            self._closed.wait(_PULSE_GAP_S)
            with self._lock:
                if not self._queued or self._closed.is_set():
                    self._worker = None
                    return
                seconds = self._queued.pop(0)
                self._device.on()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._queued.clear()
            worker = self._worker
            self._device.close()  # a closed output is left in its inactive (safe) state
        if worker is not None and worker is not threading.current_thread():
            worker.join(1.0)


class LatchOutput:
    """A digital output that stays on until switched off: a stop-line relay, a buzzer."""

    def __init__(self, pin, factory, active_high: bool = True):
        try:
            self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=factory)
        except (GPIOZeroError, ValueError) as exc:
            raise GpioError(f"output pin {pin!r}: {exc}") from None

    @property
    def is_on(self) -> bool:
        return bool(self._device.value)

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    def close(self) -> None:
        self._device.close()


class StackLight:
    """A green/amber/red stack light and an optional buzzer, driven by one state name.

    green: running and healthy; amber: running, degraded (a link down); red: faulted
    (the buzzer sounds while red); off: stopped. Any lamp may be left out (None).
    """

    STATES = ("green", "amber", "red", "off")

    def __init__(self, factory, green=None, amber=None, red=None, buzzer=None, active_high: bool = True):
        self._lamps: dict[str, LatchOutput] = {}
        try:
            for colour, pin in (("green", green), ("amber", amber), ("red", red), ("buzzer", buzzer)):
                if pin is not None:
                    self._lamps[colour] = LatchOutput(pin, factory, active_high)
        except GpioError:
            self.close()
            raise
        self.state = "off"

    def show(self, state: str) -> None:
        if state not in self.STATES:
            raise ValueError(f"stack light state {state!r} is not one of {self.STATES}")
        for colour, lamp in self._lamps.items():
            wanted = (colour == state) or (colour == "buzzer" and state == "red")
            lamp.on() if wanted else lamp.off()
        self.state = state

    def close(self) -> None:
        for lamp in self._lamps.values():
            lamp.close()
        self._lamps = {}
