"""A trigger that fires on a fixed period: time-lapse inspection, or a line without a sensor."""

from __future__ import annotations

import threading
import time
from typing import Callable


class IntervalTrigger:
    def __init__(self, period_s: float, on_fire: Callable[[float], object], name: str = "interval"):
        if period_s <= 0:
            raise ValueError("period must be positive")
        self._period = period_s
        self._on_fire = on_fire
        self._stop = threading.Event()
        self.fires = 0
        self._thread = threading.Thread(target=self._run, name=f"{name}-trigger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self._period
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.fires += 1
            self._on_fire(time.monotonic())
            next_at += self._period
            if next_at < time.monotonic():  # fell behind (suspended?): skip, don't burst
                next_at = time.monotonic() + self._period

    def stats(self) -> dict:
        return {"type": "interval", "period_ms": round(self._period * 1000, 3), "fires": self.fires}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
