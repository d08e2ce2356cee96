"""Small helpers shared by the trigger tests."""

from __future__ import annotations

import threading
import time


def wait_until(condition, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class FireRecorder:
    """A trigger's on_fire: records each call's time, weight (and its change) and PLC trigger id."""

    def __init__(self):
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, t_mono: float, weight_g=None, plc_trigger_id=None, weight_change_g=None) -> None:
        with self._lock:
            self.calls.append({"t": t_mono, "weight_g": weight_g, "plc_trigger_id": plc_trigger_id,
                               "weight_change_g": weight_change_g})

    @property
    def ids(self) -> list[int | None]:
        with self._lock:
            return [call["plc_trigger_id"] for call in self.calls]
