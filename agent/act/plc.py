"""The PLC link: the vision-sensor handshake over Modbus TCP or Modbus RTU (serial).

This is the only agent module that imports pymodbus.

Handshake (holding registers, 0-based; the defaults, all configurable):

    100-101  inspection id echo (u32, high word first): the trigger this result belongs to
    102      result code: 0 none, 1 pass, 2 reject, 3 no read, 4 late (rejected by policy)
    103      defect count (saturates at 65535)
    104      defect class: 1 + index of the first defect's class in the line's label list, 0 none
    105      result valid: 1 while the block holds a complete result; the PLC clears it on taking it
    106-107  trigger id (u32): the newest trigger the agent has counted when it wrote the result;
             trigger id - inspection id = parts inspected but not yet answered
    108      heartbeat counter: +1 every heartbeat period while the pipeline is healthy
    109      online: 1 while healthy, 0 when unhealthy or shutting down
    110-111  encoder count (u32, written by the PLC, read by the agent for timed reject)
    112      part present (written by the PLC): 1 while a part is at the camera
    113-114  PLC trigger id (u32, written by the PLC): +1 for every part it sends to the camera;
             a PLC-triggered result echoes it as the inspection id
    coil 10  reject: written last; the PLC treats it as "result complete"
    coil 11  part present as a coil, for a PLC program that sets a bit instead of register 112

A result is one FC16 write of the 8-register block 100..107 followed by one FC5 write of
the reject coil, and each is read back and compared (FC3 / FC1) before it counts as
written. A link that dies between the writes leaves the PLC with no result rather than
a torn one. On every (re)connect the agent first clears result-valid, so a result
written before a cut can never be taken for a new one.

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

from collections import deque

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
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
    LATE = 4  # the result came after the part's deadline: rejected by policy


class PlcError(Exception):
    """A PLC problem the user can fix (bad address, bad settings); the message says how."""


RESULT_BLOCK = 8  # inspection id hi, lo, result code, defect count, defect class, valid, trigger id hi, lo


@dataclass(frozen=True)
class PlcRegisterMap:
    """Holding-register and coil addresses, 0-based as sent on the wire.

    The result registers must be contiguous (inspection_id .. inspection_id + 7) because
    they go out in one write; heartbeat, online and encoder may be anywhere.
    """

    inspection_id: int = 100  # u32 in two registers, high word first
    result_code: int = 102
    defect_count: int = 103
    reject_coil: int = 10
    defect_class: int = 104
    result_valid: int = 105
    trigger_id: int = 106  # u32
    heartbeat: int = 108
    online: int = 109
    encoder: int = 110  # u32, written by the PLC
    part_present: int = 112  # written by the PLC
    plc_trigger_id: int = 113  # u32, written by the PLC
    part_present_coil: int = 11  # written by the PLC

    def __post_init__(self) -> None:
        names = ("inspection_id", "result_code", "defect_count", "reject_coil", "defect_class", "result_valid",
                 "trigger_id", "heartbeat", "online", "encoder", "part_present", "plc_trigger_id", "part_present_coil")
        for name in names:
            address = getattr(self, name)
            if not isinstance(address, int) or not 0 <= address <= _MAX_ADDRESS:
                raise PlcError(
                    f"PLC register map: {name}={address!r} is not a Modbus address 0..65535. "
                    "Addresses are 0-based protocol addresses: if the PLC manual numbers "
                    "holding registers from 40001, subtract 40001."
                )
        if self.inspection_id + RESULT_BLOCK - 1 > _MAX_ADDRESS:
            raise PlcError(
                f"PLC register map: inspection_id={self.inspection_id} leaves no room for the "
                f"{RESULT_BLOCK} result registers below 65536"
            )
        for name, offset in (("result_code", 2), ("defect_count", 3), ("defect_class", 4), ("result_valid", 5),
                             ("trigger_id", 6)):
            expected = self.inspection_id + offset
            if getattr(self, name) != expected:
                raise PlcError(
                    f"PLC register map: {name} must be inspection_id + {offset} = {expected}, "
                    f"got {getattr(self, name)}. The result is written as one block of {RESULT_BLOCK} "
                    "holding registers (inspection id hi, lo, result code, defect count, defect class, "
                    "result valid, trigger id hi, lo)."
                )
        block = range(self.inspection_id, self.inspection_id + RESULT_BLOCK)
        for name in ("heartbeat", "online", "encoder"):
            if getattr(self, name) in block or (name == "encoder" and self.encoder + 1 in block):
                raise PlcError(f"PLC register map: {name}={getattr(self, name)} overlaps the result block "
                               f"{block.start}..{block.stop - 1}")
        # The PLC writes the part signal; nothing the agent writes may share its registers.
        written = {*block, self.heartbeat, self.online, self.encoder, self.encoder + 1}
        for name, span in (("part_present", 1), ("plc_trigger_id", 2)):
            address = getattr(self, name)
            if written & {address, address + span - 1} or address + span - 1 > _MAX_ADDRESS:
                raise PlcError(f"PLC register map: {name}={address} overlaps the registers the agent writes "
                               f"(result block {block.start}..{block.stop - 1}, heartbeat, online) or the encoder")
        if self.part_present in (self.plc_trigger_id, self.plc_trigger_id + 1):
            raise PlcError(f"PLC register map: part_present={self.part_present} overlaps plc_trigger_id "
                           f"{self.plc_trigger_id}..{self.plc_trigger_id + 1}")
        if self.part_present_coil == self.reject_coil:
            raise PlcError(f"PLC register map: part_present_coil and reject_coil are both coil {self.reject_coil}")


@dataclass(frozen=True)
class PartSignal:
    """What the PLC says about the part at the camera, as one poll read it."""

    present: bool
    trigger_id: int  # u32, +1 per part
    t_mono: float  # when the PLC's answer arrived: the PLC had written these values before it


@dataclass(frozen=True)
class TcpLink:
    host: str
    port: int = 502

    def describe(self) -> str:
        return f"PLC {self.host}:{self.port}"

    def check(self) -> None:
        if not self.host:
            raise PlcError("PLC host is empty: set the PLC's IP address or host name")
        if not 1 <= self.port <= 65535:
            raise PlcError(f"PLC port {self.port} is not a TCP port 1..65535 (Modbus TCP uses 502)")

    def client(self, timeout_s: float, name: str):
        return ModbusTcpClient(self.host, port=self.port, timeout=timeout_s, retries=0, name=name)


@dataclass(frozen=True)
class RtuLink:
    """Modbus RTU on a serial port (RS-485 adapter, or a pty in the tests)."""

    port: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "E"  # Modbus RTU's default framing is 8E1
    stopbits: int = 1

    def describe(self) -> str:
        return f"PLC {self.port} (RTU {self.baudrate} {self.bytesize}{self.parity}{self.stopbits})"

    def check(self) -> None:
        if not self.port:
            raise PlcError("PLC serial port is empty: set plc.rtu.port, e.g. /dev/ttyUSB0")
        if self.parity not in ("N", "E", "O") or self.bytesize not in (7, 8) or self.stopbits not in (1, 2):
            raise PlcError(f"{self.describe()}: framing must be 7/8 data bits, parity N/E/O, 1/2 stop bits")

    def client(self, timeout_s: float, name: str):
        return ModbusSerialClient(self.port, framer=FramerType.RTU, baudrate=self.baudrate, bytesize=self.bytesize,
                                  parity=self.parity, stopbits=self.stopbits, timeout=timeout_s, retries=0, name=name)


class PlcVerifyError(Exception):
    """A read-back that does not match what was written."""


class ModbusPlc:
    """One Modbus connection (TCP or RTU) to one PLC, with its own reconnect thread.

    Use as a context manager, or call start() and close(). All methods that talk to the
    PLC fail fast (return False / None) while the link is down and never raise for link
    problems; the link thread reconnects with backoff.
    """

    def __init__(
        self,
        link: TcpLink | RtuLink,
        device_id: int = 1,
        register_map: PlcRegisterMap = PlcRegisterMap(),
        timeout_s: float = 0.25,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        verify: bool = True,
        clear_on_connect: bool = True,
    ) -> None:
        """clear_on_connect=False: a read-only probe (edge-agent doctor) that must not touch result-valid."""
        link.check()
        if not 0 <= device_id <= 255:
            raise PlcError(f"PLC device_id {device_id} is not a Modbus unit id 0..255 (usually 1)")
        if timeout_s <= 0:
            raise PlcError(f"PLC timeout_s must be > 0, got {timeout_s}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise PlcError(
                f"PLC reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s, "
                f"got {reconnect_min_s} and {reconnect_max_s}"
            )
        self._link = link
        self._device_id = device_id
        self._map = register_map
        self._timeout_s = timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._verify = verify
        self._clear_on_connect = clear_on_connect

        # _lock guards the client and everything below it. It is held for writes but
        # never while connecting, so a fail-fast write never waits on a connect attempt.
        self._lock = threading.Lock()
        self._client = None
        self._connected = False
        self._ever_connected = False
        self._down_logged = False
        self._writes_ok = 0
        self._writes_failed = 0
        self._verify_failures = 0
        self._heartbeats = 0
        self._reconnects = 0
        self._connects = 0
        self._reads_failed = 0
        self._last_error: str | None = None
        self._last_write_ms: float | None = None
        self._write_ms: deque[float] = deque(maxlen=2000)  # result writes incl. read-back
        self.link_lost_at: float | None = None  # monotonic time the link was last found down

        self._closing = threading.Event()
        self._wake_link_thread = threading.Event()  # set when the link drops, or on close
        self._first_attempt_done = threading.Event()
        self._link_thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self._link.describe()

    @property
    def register_map(self) -> PlcRegisterMap:
        return self._map

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; waits at most timeout_s for the first attempt."""
        if self._closing.is_set():
            raise RuntimeError(f"{self.name}: start() after close(); create a new ModbusPlc")
        if self._link_thread is not None:
            return
        self._link_thread = threading.Thread(target=self._run_link, name=f"plc-link:{self.name}", daemon=True)
        self._link_thread.start()
        # Not required for correctness; it just lets the first result after start() go out.
        self._first_attempt_done.wait(self._timeout_s + 0.1)

    def close(self) -> None:
        if self._connected and not self._closing.is_set():
            self.write_heartbeat(None, online=False)  # a clean stop tells the PLC at once
        self._closing.set()
        self._wake_link_thread.set()
        if self._link_thread is not None:
            self._link_thread.join(_CLOSE_JOIN_S)
            if self._link_thread.is_alive():
                log.warning("%s: link thread did not stop within %.1f s", self.name, _CLOSE_JOIN_S)
        with self._lock:
            self._drop_client()

    def __enter__(self) -> ModbusPlc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the line's side ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def link_generation(self) -> int:
        """+1 on every successful (re)connect: a reader can tell the link came back in between."""
        return self._connects

    def write_result(
        self, inspection_id: int, result_code: ResultCode, defect_count: int, reject: bool,
        defect_class: int = 0, trigger_id: int | None = None,
    ) -> bool:
        """Send one result; True once the PLC has acknowledged (and, with verify, echoed) both writes.

        Never raises for link problems and never blocks longer than about 4 x timeout_s.
        defect_count saturates at 65535. A bad inspection_id is a bug of ours: ValueError.
        """
        trigger_id = inspection_id if trigger_id is None else trigger_id
        for name, value in (("inspection_id", inspection_id), ("trigger_id", trigger_id)):
            if not 0 <= value <= _MAX_U32:
                raise ValueError(f"{name} {value} does not fit the PLC's u32 register pair")
        if defect_count < 0:
            raise ValueError(f"defect_count {defect_count} is negative")
        registers = [
            inspection_id >> 16,
            inspection_id & 0xFFFF,
            int(ResultCode(result_code)),
            min(defect_count, _MAX_U16),
            min(max(defect_class, 0), _MAX_U16),
            1,  # result valid
            trigger_id >> 16,
            trigger_id & 0xFFFF,
        ]
        base = self._map.inspection_id
        with self._lock:
            if not self._connected or self._client is None:
                self._writes_failed += 1
                return False
            started = time.perf_counter()
            try:
                response = self._client.write_registers(base, registers, device_id=self._device_id)
                if response.isError():
                    return self._plc_rejected(response, f"holding registers {base}..{base + RESULT_BLOCK - 1}")
                if self._verify:
                    self._check_registers(base, registers)
                response = self._client.write_coil(self._map.reject_coil, reject, device_id=self._device_id)
                if response.isError():
                    return self._plc_rejected(response, f"reject coil {self._map.reject_coil}")
                if self._verify:
                    self._check_coil(self._map.reject_coil, reject)
            except PlcVerifyError as exc:
                return self._verify_failed(exc)
            except (ModbusException, OSError) as exc:
                self._link_lost(exc)
                return False
            self._last_write_ms = (time.perf_counter() - started) * 1000.0
            self._write_ms.append(self._last_write_ms)
            self._writes_ok += 1
            return True

    def write_heartbeat(self, counter: int | None, online: bool) -> bool:
        """Heartbeat counter (None: leave it, so it goes stale) and the online flag, read back.

        Doubles as the link probe: a cut link is found within one heartbeat period.
        """
        with self._lock:
            if not self._connected or self._client is None:
                return False
            try:
                if counter is not None:
                    self._write_one(self._map.heartbeat, counter & _MAX_U16)
                self._write_one(self._map.online, int(online))
            except PlcVerifyError as exc:
                return self._verify_failed(exc)
            except (ModbusException, OSError) as exc:
                self._link_lost(exc)
                return False
            self._heartbeats += counter is not None
            return True

    def read_encoder(self) -> int | None:
        """The PLC's encoder count (u32), or None while the link is down."""
        with self._lock:
            if not self._connected or self._client is None:
                return None
            try:
                response = self._client.read_holding_registers(self._map.encoder, count=2, device_id=self._device_id)
                if response.isError():
                    self._plc_rejected(response, f"encoder registers {self._map.encoder}..{self._map.encoder + 1}",
                                       write=False)
                    return None
            except (ModbusException, OSError) as exc:
                self._link_lost(exc, write=False)
                return None
            hi, lo = response.registers
            return (hi << 16) | lo

    def read_part_signal(self, present_from_coil: bool = False) -> PartSignal | None:
        """The PLC's part-present level and trigger id; None while the link is down or the PLC refuses.

        One FC3 read when part present sits just below the trigger id (the default map);
        otherwise the id, then the level (FC3, or FC1 for the coil).
        """
        m = self._map
        with self._lock:
            if not self._connected or self._client is None:
                return None
            try:
                if not present_from_coil and m.plc_trigger_id == m.part_present + 1:
                    values = self._read_registers(m.part_present, 3, "part present and trigger id registers")
                    if values is None:
                        return None
                    present, hi, lo = values
                else:
                    values = self._read_registers(m.plc_trigger_id, 2, "trigger id registers")
                    if values is None:
                        return None
                    hi, lo = values
                    if present_from_coil:
                        response = self._client.read_coils(m.part_present_coil, count=1, device_id=self._device_id)
                        if response.isError():
                            self._plc_rejected(response, f"part present coil {m.part_present_coil}", write=False)
                            return None
                        present = response.bits[0]
                    else:
                        level = self._read_registers(m.part_present, 1, "part present register")
                        if level is None:
                            return None
                        (present,) = level
            except (ModbusException, OSError) as exc:
                self._link_lost(exc, write=False)
                return None
        return PartSignal(bool(present), (int(hi) << 16) | int(lo), time.monotonic())

    def _read_registers(self, address: int, count: int, what: str) -> list[int] | None:
        response = self._client.read_holding_registers(address, count=count, device_id=self._device_id)
        if response.isError():
            self._plc_rejected(response, f"{what} {address}..{address + count - 1}", write=False)
            return None
        return list(response.registers)

    def stats(self) -> dict:
        with self._lock:
            samples = sorted(self._write_ms)
        def pct(q: float):
            return round(samples[min(len(samples) - 1, int(q * (len(samples) - 1) + 0.5))], 2) if samples else None
        return {
            "connected": self._connected,
            "link": self.name,
            "writes_ok": self._writes_ok,
            "writes_failed": self._writes_failed,
            "reads_failed": self._reads_failed,
            "verify_failures": self._verify_failures,
            "heartbeats": self._heartbeats,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "last_write_ms": self._last_write_ms,
            "write_ms_p50": pct(0.5),
            "write_ms_p99": pct(0.99),
        }

    # -- writes and read-backs (called with _lock held) -----------------------------------

    def _write_one(self, address: int, value: int) -> None:
        response = self._client.write_register(address, value, device_id=self._device_id)
        if response.isError():
            raise PlcVerifyError(f"the PLC refused the write of holding register {address}")
        if self._verify:
            self._check_registers(address, [value])

    def _check_registers(self, address: int, expected: list[int]) -> None:
        response = self._client.read_holding_registers(address, count=len(expected), device_id=self._device_id)
        if response.isError() or list(response.registers) != expected:
            got = "an error" if response.isError() else list(response.registers)
            raise PlcVerifyError(f"read-back of holding registers {address}..{address + len(expected) - 1} "
                                 f"gave {got}, wrote {expected}")

    def _check_coil(self, address: int, expected: bool) -> None:
        response = self._client.read_coils(address, count=1, device_id=self._device_id)
        if response.isError() or bool(response.bits[0]) != expected:
            raise PlcVerifyError(f"read-back of coil {address} does not match the written {expected}")

    # -- failure handling (called with _lock held) ----------------------------------------

    def _verify_failed(self, exc: PlcVerifyError) -> bool:
        self._writes_failed += 1
        self._verify_failures += 1
        error = (f"{self.name}: {exc}; another master may be writing the same registers, "
                 "or the register map does not match the PLC program")
        if error != self._last_error:
            log.error("%s", error)
        self._last_error = error
        return False

    def _plc_rejected(self, response, what: str, write: bool = True) -> bool:
        """The PLC answered with a Modbus exception: the link is fine, the request is not."""
        if write:
            self._writes_failed += 1
        else:
            self._reads_failed += 1
        try:
            reason = ExcCodes(response.exception_code).name
        except ValueError:
            reason = f"code {response.exception_code}"
        error = (
            f"{self.name} rejected the {'write to' if write else 'read of'} {what} (Modbus exception {reason}); "
            f"check the PLC register map and device_id={self._device_id}"
        )
        if error != self._last_error:  # once per distinct problem, not once per part
            log.error("%s", error)
        self._last_error = error
        return False

    def _link_lost(self, exc: BaseException, write: bool = True) -> None:
        if write:
            self._writes_failed += 1
        else:
            self._reads_failed += 1
        self._last_error = f"{self.name} link lost: {exc}"
        self.link_lost_at = time.monotonic()
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
        client = self._link.client(self._timeout_s, self.name)
        if client.connect():
            try:
                # A result written before a cut must never be taken for a new one. The request
                # also proves the PLC answers, not just that a socket (or serial port) opened.
                if self._clear_on_connect:
                    response = client.write_register(self._map.result_valid, 0, device_id=self._device_id)
                else:
                    response = client.read_holding_registers(self._map.result_valid, count=1,
                                                             device_id=self._device_id)
                cleared = True  # the PLC answered: the link is up, even if it refused the register
                if response.isError():
                    with self._lock:
                        self._plc_rejected(response, f"result-valid register {self._map.result_valid}")
                        self._writes_failed -= 1  # not a result write
            except (ModbusException, OSError):
                cleared = False
        else:
            cleared = False
        if not cleared:
            client.close()
            with self._lock:
                self._last_error = f"{self.name} is unreachable (no answer within {self._timeout_s} s)"
                if not self._down_logged:
                    log.warning(
                        "%s is unreachable; results fail fast until it is back. Check the PLC is on "
                        "and the address/port are right; reconnecting in the background (backoff up to %g s)",
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
            self._connects += 1
            self._down_logged = False
            if self._ever_connected:
                self._reconnects += 1
                log.info("%s reconnected", self.name)
            else:
                log.info("%s connected", self.name)
            self._ever_connected = True
        return True


class ModbusTcpPlc(ModbusPlc):
    """ModbusPlc over TCP, by host and port."""

    def __init__(self, host: str, port: int = 502, **kwargs) -> None:
        super().__init__(TcpLink(host, port), **kwargs)
