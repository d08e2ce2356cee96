"""A simulated PLC: a real Modbus server (TCP on loopback, or RTU on a serial port / pty)
that records inspection results, watches the agent's heartbeat and models the belt encoder.

Modelled on pymodbus's own simulator: a SimDevice (register blocks) plus an action
hook that gives it behaviour. The hook fires when the agent writes the reject coil,
which is the write that completes a result, and records the result registers as
they are at that moment; it also notes every heartbeat change. A watcher task faults
the line when the heartbeat has not changed for heartbeat_timeout_s, as a PLC program
would, and an encoder task counts belt travel into the encoder registers.

It can also play the PLC's side of a PLC-triggered camera: when a part reaches the camera,
`present_part()` writes the part's trigger id and raises part present (register and coil) in
one scan; `clear_part()` drops it. `part_sensor()` is the same as an object with
drive_high()/drive_low(), so the conveyor drives it as it drives a sensor pin. The results
the agent writes are matched to parts by that id (`results_by_trigger_id()`). The trigger
id is retentive, like a PLC counter in retentive memory: it survives a stop()/start().
pymodbus types stay inside this module.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .ports import server_port

log = logging.getLogger(__name__)

HOLDING_REGISTER_COUNT = 1000
COIL_COUNT = 1000

_READ_HOLDING_REGISTERS = 3
_WRITE_SINGLE_REGISTER = 6
_WRITE_MULTIPLE_REGISTERS = 16
_WRITE_SINGLE_COIL = 5
_WRITE_MULTIPLE_COILS = 15
_RESULT_REGISTER_COUNT = 8  # inspection id (u32: hi, lo), result code, defect count, class, valid, trigger id
_WATCH_TICK_S = 0.005  # a PLC scan: the encoder registers are this fresh

_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PlcResult:
    t_mono: float  # time.monotonic() when the reject-coil write arrived (completes a result)
    inspection_id: int
    result_code: int
    defect_count: int
    reject: bool
    defect_class: int = 0
    valid: bool = True
    trigger_id: int = 0


@dataclass(frozen=True)
class PresentedPart:
    trigger_id: int
    t_mono: float  # when part present and the id were in the registers (inside the server's loop)


@dataclass(frozen=True)
class HeartbeatFault:
    t_last_change: float  # monotonic time the heartbeat last changed
    t_detected: float  # when the watcher faulted the line
    t_recovered: float | None = None


class SimPlc:
    """A PLC on 127.0.0.1 with 1000 holding registers and 1000 coils (0-based addresses).

    Coils and holding registers are separate address spaces, as on a real PLC.
    Registers reset on every start(), like a PLC power cycle; results() survives
    restarts, because it is the test's record of what the PLC received.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        device_id: int = 1,
        inspection_id_addr: int = 100,
        reject_coil_addr: int = 10,
        heartbeat_addr: int = 108,
        encoder_addr: int = 110,
        part_present_addr: int = 112,
        plc_trigger_id_addr: int = 113,
        part_present_coil_addr: int = 11,
        first_trigger_id: int = 1,
        heartbeat_timeout_s: float = 1.5,
        serial_port: str | None = None,
        baudrate: int = 19200,
        parity: str = "E",
    ) -> None:
        """serial_port: serve Modbus RTU on that port (e.g. one end of a pty pair) instead of TCP."""
        if not 0 <= inspection_id_addr <= HOLDING_REGISTER_COUNT - _RESULT_REGISTER_COUNT:
            raise ValueError(
                f"inspection_id_addr={inspection_id_addr} must leave {_RESULT_REGISTER_COUNT} result registers "
                f"inside holding registers 0..{HOLDING_REGISTER_COUNT - 1}"
            )
        if not 0 <= reject_coil_addr < COIL_COUNT:
            raise ValueError(f"reject_coil_addr={reject_coil_addr} must be in 0..{COIL_COUNT - 1}")
        self.host = host
        self.port = port or (0 if serial_port else server_port(host))  # kept across stop() and start()
        self._device_id = device_id
        self._inspection_id_addr = inspection_id_addr
        self._reject_coil_addr = reject_coil_addr
        self._heartbeat_addr = heartbeat_addr
        self._encoder_addr = encoder_addr
        self._part_present_addr = part_present_addr
        self._plc_trigger_id_addr = plc_trigger_id_addr
        self._part_present_coil_addr = part_present_coil_addr
        self._trigger_id = first_trigger_id - 1  # the last id written; retentive across restarts
        self.presented: list[PresentedPart] = []
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._serial = (serial_port, baudrate, parity) if serial_port else None

        # The heartbeat watcher: armed by the first heartbeat change, like a PLC program
        # that only watches a vision system once it has come online.
        self._heartbeat_value: int | None = None
        self._heartbeat_changed_at: float | None = None
        self.heartbeat_faults: list[HeartbeatFault] = []
        # The belt: encoder counts = travel since start() x counts_per_m.
        self._belt_speed_mps = 0.0
        self._counts_per_m = 1000.0
        self._belt_origin = (time.monotonic(), 0.0)  # (t, travel m) at the last speed change

        self._results: list[PlcResult] = []
        self._results_changed = threading.Condition()

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._stop_requested: asyncio.Event | None = None
        self._listening = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._listening.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run_server, name=f"sim-plc:{self.port}", daemon=True)
        self._thread.start()
        if not self._listening.wait(_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"SimPlc did not start listening on {self.host}:{self.port} within {_START_TIMEOUT_S} s")
        if self._start_error is not None:
            error = self._start_error
            self._thread.join(_STOP_TIMEOUT_S)
            self._thread = None
            raise RuntimeError(f"SimPlc could not listen on {self.host}:{self.port}: {error}") from error
        self._thread.name = f"sim-plc:{self.port}"

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:  # the loop already finished on its own
                pass
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"SimPlc on port {self.port} did not stop within {_STOP_TIMEOUT_S} s")
        self._thread = None

    def __enter__(self) -> SimPlc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- the line the PLC runs ------------------------------------------------------------

    def set_belt(self, speed_mps: float, counts_per_m: float = 1000.0) -> None:
        """Run the belt: the encoder registers count travel in counts_per_m units."""
        now = time.monotonic()
        self._belt_origin = (now, self.belt_travel_m(now))
        self._belt_speed_mps = speed_mps
        self._counts_per_m = counts_per_m

    def belt_travel_m(self, t: float | None = None) -> float:
        t0, travel0 = self._belt_origin
        return travel0 + self._belt_speed_mps * ((time.monotonic() if t is None else t) - t0)

    def encoder_count(self, t: float | None = None) -> int:
        return int(self.belt_travel_m(t) * self._counts_per_m) & 0xFFFF_FFFF

    # -- the part-present side of a PLC-triggered camera ----------------------------------

    def present_part(self, trigger_id: int | None = None) -> int:
        """A part is at the camera: write its trigger id (None: the last + 1) and raise part present."""
        self._trigger_id = (self._trigger_id + 1 if trigger_id is None else trigger_id) & 0xFFFF_FFFF
        part_id = self._trigger_id

        async def scan() -> None:
            await self._write_part_signal(True)
            self.presented.append(PresentedPart(part_id, time.monotonic()))

        self._run_on_loop(scan())
        return part_id

    def clear_part(self) -> None:
        """The part has left the camera: part present drops (the id stays)."""
        self._run_on_loop(self._write_part_signal(False))

    def skip_trigger_ids(self, count: int) -> None:
        """The next part's id jumps by count + 1, as if the PLC had counted parts the agent never saw."""
        self._trigger_id = (self._trigger_id + count) & 0xFFFF_FFFF

    def part_sensor(self) -> PartSensor:
        return PartSensor(self)

    def results_by_trigger_id(self) -> dict[int, PlcResult]:
        """The first result written for each inspection id: how a PLC matches results to parts."""
        by_id: dict[int, PlcResult] = {}
        for result in self.results():
            by_id.setdefault(result.inspection_id, result)
        return by_id

    async def _write_part_signal(self, present: bool) -> None:
        assert self._server is not None
        part_id = self._trigger_id
        await self._server.async_setValues(self._device_id, _WRITE_MULTIPLE_REGISTERS, self._plc_trigger_id_addr,
                                           [part_id >> 16, part_id & 0xFFFF])
        await self._server.async_setValues(self._device_id, _WRITE_SINGLE_REGISTER, self._part_present_addr,
                                           [int(present)])
        await self._server.async_setValues(self._device_id, _WRITE_SINGLE_COIL, self._part_present_coil_addr,
                                           [present])

    def _run_on_loop(self, coroutine) -> None:
        loop = self._loop
        if not self.running or loop is None or self._server is None:
            coroutine.close()
            raise RuntimeError("SimPlc is not running; start() it before presenting parts")
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(_STOP_TIMEOUT_S)

    @property
    def heartbeat_faulted(self) -> bool:
        return bool(self.heartbeat_faults) and self.heartbeat_faults[-1].t_recovered is None

    # -- what the PLC received ------------------------------------------------------------

    def results(self) -> list[PlcResult]:
        with self._results_changed:
            return list(self._results)

    def wait_for_results(self, n: int, timeout: float) -> list[PlcResult]:
        """Return all results once there are at least n; raise TimeoutError otherwise."""
        with self._results_changed:
            if not self._results_changed.wait_for(lambda: len(self._results) >= n, timeout):
                raise TimeoutError(f"SimPlc received {len(self._results)} of {n} results within {timeout} s")
            return list(self._results)

    def read_holding(self, address: int, count: int) -> list[int]:
        if address < 0 or count < 1 or address + count > HOLDING_REGISTER_COUNT:
            raise ValueError(
                f"holding registers {address}..{address + count - 1} are outside 0..{HOLDING_REGISTER_COUNT - 1}"
            )
        loop, server = self._loop, self._server
        if not self.running or loop is None or server is None:
            raise RuntimeError("SimPlc is not running; start() it before reading registers")
        read = server.async_getValues(self._device_id, _READ_HOLDING_REGISTERS, address, count)
        return list(asyncio.run_coroutine_threadsafe(read, loop).result(_STOP_TIMEOUT_S))

    # -- the server thread ----------------------------------------------------------------

    def _build_device(self) -> SimDevice:
        # Four separate blocks (coils, discrete inputs, holding, input registers), as on a
        # classic PLC; in pymodbus's shared mode coil 10 would alias holding register 10.
        return SimDevice(
            id=self._device_id,
            simdata=(
                [SimData(address=0, values=[False] * COIL_COUNT, datatype=DataType.BITS)],
                [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(address=0, count=HOLDING_REGISTER_COUNT, values=0, datatype=DataType.REGISTERS)],
                [SimData(address=0, count=16, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_access,
        )

    def _run_server(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            if self._listening.is_set():
                log.exception("SimPlc on port %d failed", self.port)
            else:  # start() raises it in the caller's thread
                self._start_error = exc
                self._listening.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        if self._serial is not None:
            port, baudrate, parity = self._serial
            server = ModbusSerialServer(self._build_device(), framer=FramerType.RTU, port=port, baudrate=baudrate,
                                        parity=parity)
        else:
            server = ModbusTcpServer(self._build_device(), address=(self.host, self.port))
        await server.serve_forever(background=True)  # raises if it cannot listen
        self._server = server
        if self._serial is None:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        await self._write_part_signal(False)  # the retentive trigger id, after a power cycle
        self._listening.set()
        watcher = asyncio.create_task(self._watch())
        try:
            await self._stop_requested.wait()
        finally:
            watcher.cancel()
            await server.shutdown()  # also closes the open client connections
            await asyncio.sleep(0)  # let the transports run their close callbacks
            self._server = None
            self._loop = None

    async def _watch(self) -> None:
        """Every tick: the encoder registers from belt travel, and the heartbeat watchdog."""
        assert self._server is not None
        while True:
            count = self.encoder_count()
            await self._server.async_setValues(self._device_id, _WRITE_MULTIPLE_REGISTERS, self._encoder_addr,
                                               [count >> 16, count & 0xFFFF])
            now = time.monotonic()
            changed = self._heartbeat_changed_at
            if changed is not None and now - changed > self.heartbeat_timeout_s and not self.heartbeat_faulted:
                self.heartbeat_faults.append(HeartbeatFault(changed, now))
                log.warning("SimPlc: heartbeat stale for %.2f s: line faulted", now - changed)
            await asyncio.sleep(_WATCH_TICK_S)

    def _heartbeat_seen(self, value: int) -> None:
        if value == self._heartbeat_value:
            return
        now = time.monotonic()
        self._heartbeat_value = value
        self._heartbeat_changed_at = now
        if self.heartbeat_faulted:
            last = self.heartbeat_faults[-1]
            self.heartbeat_faults[-1] = HeartbeatFault(last.t_last_change, last.t_detected, now)

    async def _on_access(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        _count: int,
        _current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus SimDevice action: runs on every access, before a write is applied."""
        if function_code in (_WRITE_SINGLE_REGISTER, _WRITE_MULTIPLE_REGISTERS) and set_values is not None:
            offset = self._heartbeat_addr - address
            if 0 <= offset < len(set_values):
                self._heartbeat_seen(int(set_values[offset]))
            return None
        if function_code not in (_WRITE_SINGLE_COIL, _WRITE_MULTIPLE_COILS) or set_values is None:
            return None
        bit = self._reject_coil_addr - address
        if not 0 <= bit < len(set_values):
            return None
        arrived = time.monotonic()
        assert self._server is not None
        id_hi, id_lo, result_code, defect_count, defect_class, valid, trig_hi, trig_lo = await self._server.async_getValues(
            self._device_id, _READ_HOLDING_REGISTERS, self._inspection_id_addr, _RESULT_REGISTER_COUNT
        )
        result = PlcResult(
            t_mono=arrived,
            inspection_id=(int(id_hi) << 16) | int(id_lo),
            result_code=int(result_code),
            defect_count=int(defect_count),
            reject=bool(set_values[bit]),
            defect_class=int(defect_class),
            valid=bool(valid),
            trigger_id=(int(trig_hi) << 16) | int(trig_lo),
        )
        with self._results_changed:
            self._results.append(result)
            self._results_changed.notify_all()
        return None


class PartSensor:
    """The PLC's part-present output, driven like a gpiozero MockPin (the conveyor's sensor)."""

    def __init__(self, plc: SimPlc):
        self._plc = plc

    def drive_high(self) -> int:
        """Returns the part's trigger id."""
        return self._plc.present_part()

    def drive_low(self) -> None:
        self._plc.clear_part()
