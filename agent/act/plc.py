"""The PLC link: inspection results to a PLC over Modbus TCP.

This is the only agent module that imports pymodbus.

A result is one FC16 write of four holding registers (inspection id as u32 hi/lo,
result code, defect count) followed by one FC5 write of the reject coil. The PLC
program treats the coil write as "result complete", so a link that dies between
the two leaves the PLC with no result rather than a torn one.

The line must never stall on a dead PLC: while the link is down, write_result()
returns False at once, and a background thread reconnects with backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from enum import IntEnum

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException

log = logging.getLogger(__name__)

_MAX_ADDRESS = 0xFFFF
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFF_FFFF
_CLOSE_JOIN_S = 1.0


class ResultCode(IntEnum):
    NONE = 0
    PASS = 1
    REJECT = 2
    NO_READ = 3


class PlcError(Exception):
    """A PLC problem the user can fix (bad address, bad settings); the message says how."""


@dataclass(frozen=True)
class PlcRegisterMap:
    """Holding-register and coil addresses, 0-based as sent on the wire.

    The four result registers must be contiguous because they go out in one write.
    """

    inspection_id: int = 100  # u32 in two registers, high word first
    result_code: int = 102
    defect_count: int = 103
    reject_coil: int = 10

    def __post_init__(self) -> None:
        for name in ("inspection_id", "result_code", "defect_count", "reject_coil"):
            address = getattr(self, name)
            if not isinstance(address, int) or not 0 <= address <= _MAX_ADDRESS:
                raise PlcError(
                    f"PLC register map: {name}={address!r} is not a Modbus address 0..65535. "
                    "Addresses are 0-based protocol addresses: if the PLC manual numbers "
                    "holding registers from 40001, subtract 40001."
                )
        if self.inspection_id + 3 > _MAX_ADDRESS:
            raise PlcError(
                f"PLC register map: inspection_id={self.inspection_id} leaves no room for the "
                "4 result registers below 65536"
            )
        for name, offset in (("result_code", 2), ("defect_count", 3)):
            expected = self.inspection_id + offset
            if getattr(self, name) != expected:
                raise PlcError(
                    f"PLC register map: {name} must be inspection_id + {offset} = {expected}, "
                    f"got {getattr(self, name)}. The result is written as one block of 4 "
                    "holding registers (inspection id hi, lo, result code, defect count)."
                )


class ModbusTcpPlc:
    """One Modbus TCP connection to one PLC, with its own reconnect thread.

    Use as a context manager, or call start() and close().
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        device_id: int = 1,
        register_map: PlcRegisterMap = PlcRegisterMap(),
        timeout_s: float = 0.25,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
    ) -> None:
        if not host:
            raise PlcError("PLC host is empty: set the PLC's IP address or host name")
        if not 1 <= port <= 65535:
            raise PlcError(f"PLC port {port} is not a TCP port 1..65535 (Modbus TCP uses 502)")
        if not 0 <= device_id <= 255:
            raise PlcError(f"PLC device_id {device_id} is not a Modbus unit id 0..255 (usually 1)")
        if timeout_s <= 0:
            raise PlcError(f"PLC timeout_s must be > 0, got {timeout_s}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise PlcError(
                f"PLC reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s, "
                f"got {reconnect_min_s} and {reconnect_max_s}"
            )
        self._host = host
        self._port = port
        self._device_id = device_id
        self._map = register_map
        self._timeout_s = timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s

        # _lock guards the client and everything below it. It is held for writes but
        # never while connecting, so a fail-fast write never waits on a connect attempt.
        self._lock = threading.Lock()
        self._client: ModbusTcpClient | None = None
        self._connected = False
        self._ever_connected = False
        self._down_logged = False
        self._writes_ok = 0
        self._writes_failed = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_write_ms: float | None = None

        self._closing = threading.Event()
        self._wake_link_thread = threading.Event()  # set when the link drops, or on close
        self._first_attempt_done = threading.Event()
        self._link_thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"PLC {self._host}:{self._port}"

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; waits at most timeout_s for the first attempt."""
        if self._closing.is_set():
            raise RuntimeError(f"{self.name}: start() after close(); create a new ModbusTcpPlc")
        if self._link_thread is not None:
            return
        self._link_thread = threading.Thread(
            target=self._run_link, name=f"plc-link:{self._host}:{self._port}", daemon=True
        )
        self._link_thread.start()
        # Not required for correctness; it just lets the first result after start() go out.
        self._first_attempt_done.wait(self._timeout_s + 0.1)

    def close(self) -> None:
        self._closing.set()
        self._wake_link_thread.set()
        if self._link_thread is not None:
            self._link_thread.join(_CLOSE_JOIN_S)
            if self._link_thread.is_alive():
                log.warning("%s: link thread did not stop within %.1f s", self.name, _CLOSE_JOIN_S)
        with self._lock:
            self._drop_client()

    def __enter__(self) -> ModbusTcpPlc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the line's side ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def write_result(
        self, inspection_id: int, result_code: ResultCode, defect_count: int, reject: bool
    ) -> bool:
        """Send one result; True once the PLC has acknowledged both writes.

        Never raises for link problems and never blocks longer than about timeout_s.
        defect_count saturates at 65535. A bad inspection_id is a bug of ours: ValueError.
        """
        if not 0 <= inspection_id <= _MAX_U32:
            raise ValueError(f"inspection_id {inspection_id} does not fit the PLC's u32 register pair")
        if defect_count < 0:
            raise ValueError(f"defect_count {defect_count} is negative")
        registers = [
            inspection_id >> 16,
            inspection_id & 0xFFFF,
            int(ResultCode(result_code)),
            min(defect_count, _MAX_U16),
        ]
        with self._lock:
            if not self._connected or self._client is None:
                self._writes_failed += 1
                return False
            started = time.perf_counter()
            try:
                response = self._client.write_registers(
                    self._map.inspection_id, registers, device_id=self._device_id
                )
                if response.isError():
                    return self._plc_rejected(
                        response, f"holding registers {self._map.inspection_id}..{self._map.inspection_id + 3}"
                    )
                response = self._client.write_coil(self._map.reject_coil, reject, device_id=self._device_id)
                if response.isError():
                    return self._plc_rejected(response, f"reject coil {self._map.reject_coil}")
            except (ModbusException, OSError) as exc:
                self._link_lost(exc)
                return False
            self._last_write_ms = (time.perf_counter() - started) * 1000.0
            self._writes_ok += 1
            return True

    def stats(self) -> dict:
        with self._lock:
            return {
                "connected": self._connected,
                "writes_ok": self._writes_ok,
                "writes_failed": self._writes_failed,
                "reconnects": self._reconnects,
                "last_error": self._last_error,
                "last_write_ms": self._last_write_ms,
            }

    # -- failure handling (called with _lock held) ----------------------------------------

    def _plc_rejected(self, response, what: str) -> bool:
        """The PLC answered with a Modbus exception: the link is fine, the request is not."""
        self._writes_failed += 1
        try:
            reason = ExcCodes(response.exception_code).name
        except ValueError:
            reason = f"code {response.exception_code}"
        error = (
            f"{self.name} rejected the write to {what} (Modbus exception {reason}); "
            f"check the PLC register map and device_id={self._device_id}"
        )
        if error != self._last_error:  # once per distinct problem, not once per part
            log.error("%s", error)
        self._last_error = error
        return False

    def _link_lost(self, exc: BaseException) -> None:
        self._writes_failed += 1
        self._last_error = f"{self.name} link lost: {exc}"
        self._drop_client()
        if not self._down_logged:
            log.warning(
                "%s: link lost (%s); results fail fast while it is down, reconnecting in the background",
                self.name,
                exc,
            )
            self._down_logged = True
        self._wake_link_thread.set()

    def _drop_client(self) -> None:
        self._connected = False
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the reconnect thread -------------------------------------------------------------

    def _run_link(self) -> None:
        delay = self._reconnect_min_s
        while not self._closing.is_set():
            if self._connected:
                self._wake_link_thread.wait()
                self._wake_link_thread.clear()
                continue
            up = self._try_connect()
            self._first_attempt_done.set()
            if up:
                delay = self._reconnect_min_s
                continue
            # Full backoff with jitter, so a line of agents does not reconnect in step.
            self._closing.wait(random.uniform(0.5, 1.0) * delay)
            delay = min(delay * 2, self._reconnect_max_s)

    def _try_connect(self) -> bool:
        # A fresh client per attempt, connected outside the lock and swapped in only on success.
        client = ModbusTcpClient(
            self._host, port=self._port, timeout=self._timeout_s, retries=0, name=self.name
        )
        if not client.connect():
            client.close()
            with self._lock:
                self._last_error = f"{self.name} is unreachable (no TCP connection within {self._timeout_s} s)"
                if not self._down_logged:
                    log.warning(
                        "%s is unreachable; results fail fast until it is back. Check the PLC is on "
                        "and the host/port are right; reconnecting in the background (backoff up to %g s)",
                        self.name,
                        self._reconnect_max_s,
                    )
                    self._down_logged = True
            return False
        with self._lock:
            if self._closing.is_set():
                client.close()
                return False
            self._client = client
            self._connected = True
            self._down_logged = False
            if self._ever_connected:
                self._reconnects += 1
                log.info("%s reconnected", self.name)
            else:
                log.info("%s connected", self.name)
            self._ever_connected = True
        return True
