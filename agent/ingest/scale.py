"""The serial scale trigger: fires when the weight settles at a new value.

    [scale thread]  open port -> poll (MT-SICS `SI`) or listen (Toledo continuous)
                    -> parse -> StableChange -> on_fire(t_mono, weight_g)
                    port lost -> count, back off with jitter, reopen (the only reconnect loop)

Nothing a scale sends can crash the thread or fire a trigger by itself: garbage, checksum
errors, overload, a weight that never settles and a vanished port are counted, shown in
`stats()` (the health report), and otherwise ignored.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable

from ..serial_port import SerialError, SerialPort
from .scale_protocols import (
    BUSY, DYNAMIC, ERROR, MTSICS_REQUEST_IMMEDIATE, OVERLOAD, STABLE, UNDERLOAD, ProtocolError, ScaleReading,
    ToledoFramer, parse_mtsics,
)
from .sources import Backoff

log = logging.getLogger(__name__)

FAULT_KINDS = ("garbage", "checksum", "unit", "overload", "underload", "busy", "command_error", "no_reply",
               "unstable", "disconnects")


class StableChange:
    """Decides when a weight has settled at a new value. Pure logic, fed one reading at a time.

    A weight counts as settled after `confirm` consecutive stable readings that agree within
    the threshold; it fires if it differs from the last settled weight by more than
    `threshold_g` in the configured direction. The first settled weight after start is the
    reference and does not fire.
    """

    def __init__(self, threshold_g: float, direction: str = "increase", confirm: int = 2):
        if direction not in ("increase", "decrease", "any"):
            raise ValueError(f"direction must be increase, decrease or any, not {direction!r}")
        self.threshold_g = threshold_g
        self.direction = direction
        self.confirm = max(1, confirm)
        self.reference_g: float | None = None
        self.last_change_g: float | None = None  # settled - the reference before it, of the latest fire
        self._run: list[float] = []

    def update(self, reading: ScaleReading) -> float | None:
        """The settled weight if this reading makes a trigger, else None."""
        if reading.status != STABLE or reading.weight_g is None:
            self._run.clear()
            return None
        weight = reading.weight_g
        if self._run and abs(weight - self._run[0]) > self.threshold_g:
            self._run.clear()
        self._run.append(weight)
        if len(self._run) < self.confirm:
            return None
        settled = self._run[-1]
        if self.reference_g is None:
            self.reference_g = settled
            return None
        change = settled - self.reference_g
        if abs(change) <= self.threshold_g:
            return None
        self.reference_g = settled
        self.last_change_g = change
        self._run.clear()
        wanted = self.direction == "any" or (change > 0) == (self.direction == "increase")
        return settled if wanted else None


class ScaleTrigger:
    """A scale on a serial port, read by its own thread. `on_fire(t_mono, weight_g, weight_change_g=...)`:
    the settled weight, and how much it changed from the weight settled before it."""

    def __init__(self, port: SerialPort, protocol: str, on_fire: Callable[..., object], *,
                 threshold_g: float = 5.0, direction: str = "increase", confirm: int = 2,
                 poll_interval_s: float = 0.1, reply_timeout_s: float = 0.5, unstable_after_s: float = 10.0,
                 toledo_checksum: bool = True, backoff: Backoff = Backoff(initial_s=0.5, max_s=5.0),
                 name: str = "scale", start: bool = True):
        if protocol not in ("mtsics", "toledo"):
            raise ValueError(f"protocol must be mtsics or toledo, not {protocol!r}")
        self.name = name
        self._port = port
        self._protocol = protocol
        self._on_fire = on_fire
        self._change = StableChange(threshold_g, direction, confirm)
        self._poll_interval_s = poll_interval_s
        self._reply_timeout_s = reply_timeout_s
        self._unstable_after_s = unstable_after_s
        self._toledo_checksum = toledo_checksum
        self._backoff = backoff
        self._rng = random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.counters = dict.fromkeys(("readings", "stable_readings", "fires", "connects", "open_failures"), 0)
        self.connected = False
        self.state = "starting"
        self.weight_g: float | None = None
        self.last_fault: str | None = None
        self._last_fault_t: float | None = None
        self._logged: dict[str, float] = {}
        self._moving_since: float | None = None
        self._unstable_reported = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-scale", daemon=True)
        if start:
            self._thread.start()

    # -- the one reconnect loop ----------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with self._port:
                    self._connected(True)
                    attempt = 0
                    if self._protocol == "mtsics":
                        self._poll_mtsics()
                    else:
                        self._listen_toledo()
            except SerialError as exc:
                if self.connected:
                    self._fault("disconnects", str(exc))
                else:
                    self.counters["open_failures"] += 1
                    if attempt == 0:
                        self._note(str(exc))
            except Exception:  # a bug of ours: log it, keep the trigger alive
                log.exception("scale %s: unexpected error", self.name)
            if self.connected:
                self._connected(False)
            self.state = "disconnected"
            if self._stop.wait(self._backoff.delay(attempt, self._rng)):
                return
            attempt += 1

    def _connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self.counters["connects"] += 1
            self.state = "connected"
            log.info("scale %s: connected on %s (%s)", self.name, self._port.port, self._protocol)
        elif not self._stop.is_set():
            log.warning("scale %s: lost %s", self.name, self._port.port)

    def _poll_mtsics(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            started = time.monotonic()
            self._port.discard_input()  # a late reply must not answer the next request
            self._port.write(MTSICS_REQUEST_IMMEDIATE)
            buffer.clear()
            deadline = started + self._reply_timeout_s
            line = None
            while time.monotonic() < deadline and not self._stop.is_set():
                buffer += self._port.read(64)
                end = buffer.find(b"\n")
                if end >= 0:
                    line = bytes(buffer[:end]).rstrip(b"\r")
                    break
                if len(buffer) > 128:
                    break
            if self._stop.is_set():
                return
            if line is None:
                if buffer:
                    self._fault("garbage", f"{len(buffer)} bytes without a line end")
                else:
                    self._fault("no_reply", f"no reply to SI within {self._reply_timeout_s:.1f} s")
                    self.state = "no_reply"
            else:
                try:
                    self._reading(parse_mtsics(line))
                except ProtocolError as exc:
                    self._fault(exc.kind, str(exc))
            self._stop.wait(max(0.0, started + self._poll_interval_s - time.monotonic()))

    def _listen_toledo(self) -> None:
        framer = ToledoFramer(checksum=self._toledo_checksum)
        last_frame = time.monotonic()
        while not self._stop.is_set():
            data = self._port.read(256)
            now = time.monotonic()
            for item in framer.feed(data) if data else ():
                if isinstance(item, ProtocolError):
                    self._fault(item.kind, str(item))
                else:
                    last_frame = now
                    self._reading(item)
            if now - last_frame > self._reply_timeout_s * 4:
                self._fault("no_reply", "no frame from the scale")
                self.state = "no_reply"
                last_frame = now

    # -- readings and faults -------------------------------------------------------------
    def _reading(self, reading: ScaleReading) -> None:
        now = time.monotonic()
        self.counters["readings"] += 1
        status = reading.status
        if status in (OVERLOAD, UNDERLOAD):
            self._fault(status, reading.detail)
        elif status == BUSY:
            self._fault("busy", reading.detail)
        elif status == ERROR:
            self._fault("command_error", reading.detail)
        if status == DYNAMIC:
            self._moving_since = self._moving_since or now
            if now - self._moving_since > self._unstable_after_s and not self._unstable_reported:
                self._unstable_reported = True
                self._fault("unstable", f"weight not settled for {self._unstable_after_s:.0f} s")
        else:
            self._moving_since, self._unstable_reported = None, False
        self.state = "unstable" if self._unstable_reported else status
        if reading.weight_g is not None:
            self.weight_g = reading.weight_g
        if status == STABLE:
            self.counters["stable_readings"] += 1
        fired = self._change.update(reading)
        if fired is not None:
            self.counters["fires"] += 1
            log.info("scale %s: settled at %.1f g", self.name, fired)
            self._on_fire(now, fired, weight_change_g=self._change.last_change_g)

    def _fault(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.faults[kind] += 1
            self.last_fault = f"{kind}: {message}"
            self._last_fault_t = now
            quiet = now - self._logged.get(kind, -1e9) < 10.0  # a noisy line must not flood the log
            if not quiet:
                self._logged[kind] = now
        if not quiet:
            log.warning("scale %s: %s: %s (%d so far)", self.name, kind, message, self.faults[kind])

    def _note(self, message: str) -> None:
        self.last_fault = message
        self._last_fault_t = time.monotonic()
        log.warning("scale %s: %s", self.name, message)

    # -- health and lifecycle ------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            age = None if self._last_fault_t is None else round(time.monotonic() - self._last_fault_t, 1)
            return {
                "type": "scale", "port": self._port.port, "protocol": self._protocol, "connected": self.connected,
                "state": self.state, "weight_g": self.weight_g, "reference_g": self._change.reference_g,
                **self.counters, "faults": dict(self.faults), "last_fault": self.last_fault, "last_fault_age_s": age,
            }

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2.0)
