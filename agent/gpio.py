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
        self._on_edge(now)

    def close(self) -> None:
        self._device.close()


class PulseOutput:
    """A digital output that emits fixed-length pulses without blocking the caller."""

    def __init__(self, pin, factory, active_high: bool = True):
        try:
            self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=factory)
        except (GPIOZeroError, ValueError) as exc:
            raise GpioError(f"output pin {pin!r}: {exc}") from None

    def pulse(self, seconds: float) -> None:
        self._device.blink(on_time=seconds, off_time=0.0, n=1, background=True)

    def close(self) -> None:
        self._device.close()  # a closed output is left in its inactive (safe) state
