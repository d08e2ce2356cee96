"""Readiness, liveness and status for systemd: when to send READY=1, WATCHDOG=1 and STATUS=.

Readiness. The service is READY once the models are loaded and every line has its first frame,
meaning its detector has run on a frame from its camera. A triggered line has no frame until a
part arrives, so it is sent one *warm-up* request: a frame is grabbed and detected through the
line's own capture and inspect stages, with no PLC result and no event. That compiles the
detector for the camera's resolution, so the first part is not slowed by compiling, and proves
the camera answers. While a camera does not answer, the warm-up is retried every few seconds,
STATUS= says which line waits and why, and EXTEND_TIMEOUT_USEC= keeps the start from timing out
as long as every stage is alive. A start that hangs is still killed by TimeoutStartSec=.

Liveness. WATCHDOG=1 is sent only while every stage thread of every line is alive and none has
held one item longer than `stall_s`: a camera read, an inference or a PLC write that hangs stops
the pings, and systemd restarts the agent after WatchdogSec=. An idle line (no parts) is alive.
The pings come from the main thread's loop, so a stuck main thread stops them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .sdnotify import Notifier

log = logging.getLogger(__name__)

STALL_S = 10.0  # one item held this long by a stage means it is stuck
WARM_UP_RETRY_S = 5.0
START_EXTEND_S = 30.0


class Line(Protocol):
    name: str
    first_frame_at: float | None
    warm_up_error: str | None
    counters: dict

    def stage_activity(self) -> dict[str, dict]: ...

    def request_warm_up(self) -> bool: ...


class Service(Protocol):
    """What the watchdog reads from the running App."""

    lines: Mapping[str, Line]

    def health(self) -> dict: ...


@dataclass(frozen=True)
class Assessment:
    ready: bool  # every line has its first frame
    alive: bool  # every stage alive, none stuck
    waiting: tuple[str, ...]  # lines without a first frame, with the reason
    stuck: tuple[str, ...]  # what is not alive or stuck
    status: str  # one line for STATUS=


def assess(service: Service, stall_s: float = STALL_S) -> Assessment:
    stuck, waiting = [], []
    inspections = no_reads = rejected = 0
    for name, line in service.lines.items():
        for stage, activity in line.stage_activity().items():
            if not activity["alive"]:
                stuck.append(f"{name}/{stage} stopped")
            elif activity["busy_s"] is not None and activity["busy_s"] > stall_s:
                stuck.append(f"{name}/{stage} stuck for {activity['busy_s']:.0f} s")
        if line.first_frame_at is None:
            waiting.append(f"{name} ({line.warm_up_error})" if line.warm_up_error else name)
        inspections += line.counters.get("inspections", 0)
        no_reads += line.counters.get("no_reads", 0)
        rejected += line.counters.get("rejected", 0)
    alive, ready = not stuck, not waiting
    if not alive:
        status = "stuck: " + "; ".join(stuck) + " (watchdog pings stopped)"
    elif not ready:
        status = "waiting for the first frame: " + "; ".join(waiting)
    else:
        status = f"running: {len(service.lines)} line(s), {inspections} inspections, {rejected} rejected, {no_reads} no reads"
    if alive:
        status += _links(service.health())
    return Assessment(ready, alive, tuple(waiting), tuple(stuck), status)


def _links(health: dict) -> str:
    links = []
    for name in ("plc", "mqtt"):
        connected = (health.get(name) or {}).get("connected")
        if connected is not None:
            links.append(f"{name} {'up' if connected else 'down'}")
    return "; " + ", ".join(links) if links else ""


class ServiceWatchdog:
    """Call `tick()` every `tick_s` from the main loop; it sends what systemd needs to hear.

    `timeout_s` is WatchdogSec= (sdnotify.watchdog_timeout()); None means no watchdog pings.
    """

    def __init__(self, notifier: Notifier, timeout_s: float | None, *, stall_s: float = STALL_S,
                 warm_up_retry_s: float = WARM_UP_RETRY_S, start_extend_s: float = START_EXTEND_S,
                 clock: Callable[[], float] = time.monotonic):
        self._notifier = notifier
        self.ping_every_s = timeout_s / 2 if timeout_s else None  # sd_watchdog_enabled(3): half the timeout
        self.tick_s = min(1.0, timeout_s / 10) if timeout_s else 1.0
        self.stall_s = stall_s
        self._warm_up_retry_s = warm_up_retry_s
        self._start_extend_s = start_extend_s
        self._clock = clock
        self._service: Service | None = None
        self._ready_sent = False
        self._last_ping: float | None = None
        self._last_extend: float | None = None
        self._last_status: str | None = None
        self._was_alive = True
        self._warm_up_asked: dict[str, float] = {}
        self._note: str | None = None  # e.g. a refused reload, shown in STATUS= until the next reload

    def attach(self, service: Service) -> None:
        """Watch this (started) service from now on; after a reload, the new one."""
        self._service = service
        self._warm_up_asked = {}

    def tick(self) -> Assessment | None:
        if self._service is None:
            return None
        now = self._clock()
        found = assess(self._service, self.stall_s)
        status = f"{found.status}; {self._note}" if self._note else found.status
        if not found.ready:
            self._ask_for_warm_up(now)
        if not self._ready_sent:
            if found.ready and found.alive:
                self._notifier.ready(status)
                self._last_status = status
                self._ready_sent = True
                log.info("ready: %s", status)
            elif found.alive and (self._last_extend is None or now - self._last_extend >= self._start_extend_s / 3):
                self._notifier.extend_timeout(self._start_extend_s)
                self._last_extend = now
        if found.alive != self._was_alive:
            if found.alive:
                log.warning("every stage is making progress again: watchdog pings resume")
            else:
                log.error("%s", found.status)
            self._was_alive = found.alive
        if self._ready_sent and found.alive and self.ping_every_s is not None and (
                self._last_ping is None or now - self._last_ping >= self.ping_every_s):
            self._notifier.watchdog()
            self._last_ping = now
        if status != self._last_status:
            self._notifier.status(status)
            self._last_status = status
        return found

    def _ask_for_warm_up(self, now: float) -> None:
        for name, line in self._service.lines.items():
            if line.first_frame_at is not None:
                continue
            asked = self._warm_up_asked.get(name)
            if asked is None or now - asked >= self._warm_up_retry_s:
                if line.request_warm_up():
                    self._warm_up_asked[name] = now

    def reloading(self) -> None:
        self._notifier.reloading()
        self._notifier.status("reloading the config")
        self._last_status = None

    def reloaded(self, refused: str | None = None) -> None:
        """The reload is over: READY=1 ends it. `refused`: why the new config was not applied
        (the old one still runs); STATUS= carries it until the next reload."""
        self._note = f"reload refused, old config kept: {refused}"[:300] if refused else None
        self._notifier.ready(self._note or "config reloaded")
        self._last_status = None

    def stopping(self) -> None:
        self._notifier.stopping("stopping: finishing the inspections in flight")
