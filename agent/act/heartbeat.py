"""The PLC heartbeat: proof of life from the whole pipeline, not just from the process.

Every `period_s` the heartbeat asks `problem()` (None: healthy). While healthy it adds
one to the PLC's heartbeat register and sets online=1; while unhealthy it leaves the
counter alone and writes online=0, so the counter goes stale and the PLC program (which
watches it, e.g. faulting after 3 periods) stops the line. A frozen or dead process stops
counting by itself. The write is also the link probe: a cut PLC link is found within
one period plus the PLC timeout.

What "healthy" means is defined by the line (InspectionLine.pipeline_problem): stage
threads alive and not stuck, camera online, model loaded, and a fresh last result or
nothing waiting (idle-but-alive).

`on_state` is told green (healthy, PLC link up), amber (healthy, PLC link down) or red
(unhealthy): it drives the stack light and buzzer.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

log = logging.getLogger(__name__)


class HeartbeatPlc(Protocol):
    @property
    def connected(self) -> bool: ...

    def write_heartbeat(self, counter: int | None, online: bool) -> bool: ...


class Heartbeat:
    def __init__(self, plc: HeartbeatPlc, problem: Callable[[], str | None], period_s: float = 0.5,
                 on_state: Callable[[str], None] | None = None):
        if period_s <= 0:
            raise ValueError("heartbeat period must be > 0")
        self._plc = plc
        self._problem = problem
        self._period = period_s
        self._on_state = on_state
        self.counter = 0
        self.state: str | None = None
        self.last_problem: str | None = None
        self.beats = 0
        self.missed = 0  # periods without a beat (unhealthy, or the PLC link down)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="plc-heartbeat", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def beat(self) -> None:
        """One period's work (the thread calls it; tests may too)."""
        try:
            problem = self._problem()
        except Exception:  # a bug of ours: report unhealthy rather than stop the heartbeat thread
            log.exception("heartbeat: health check failed")
            problem = "health check failed"
        if problem != self.last_problem:
            if problem is None:
                log.info("pipeline healthy: PLC heartbeat %s", "resumes" if self.beats else "starts")
            elif not self.beats:  # still starting up (no frame yet, model warming up): not a fault
                log.info("PLC heartbeat waits for the pipeline (%s)", problem)
            else:
                log.warning("pipeline unhealthy (%s): PLC heartbeat held, online=0", problem)
            self.last_problem = problem
        if problem is None:
            if self._plc.write_heartbeat((self.counter + 1) & 0xFFFF, online=True):
                self.counter = (self.counter + 1) & 0xFFFF
                self.beats += 1
            else:
                self.missed += 1
        else:
            self._plc.write_heartbeat(None, online=False)
            self.missed += 1
        state = "red" if problem is not None else ("green" if self._plc.connected else "amber")
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.beat()

    def stats(self) -> dict:
        return {"counter": self.counter, "beats": self.beats, "missed": self.missed, "state": self.state,
                "problem": self.last_problem}
