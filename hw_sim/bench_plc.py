"""PLC handshake and timed-reject benchmark.

    .venv/bin/python -m hw_sim.bench_plc [--parts 300] [--writes 500]

- line: the simulated cell (delay-timed, then encoder-timed from the SimPlc's encoder
  register, updated every 5 ms like a PLC scan) at 400 parts/min with the reject station 0.3 m downstream on a
  0.5 m/s belt (4 parts in transit), OpenVINO on the shipped INT8 IR. Reports sensor
  edge -> PLC result (the reject-coil write, after the verified block write) p50/p99, and
  the reject timing error at the gate (pulse start - the part's arrival) p50/p99/max;
- writes: raw result writes (8-register block + coil, each read back) against the
  simulated PLC over loopback TCP and over Modbus RTU on a socat pty pair at 115200 baud.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agent.act.plc import ModbusPlc, ModbusTcpPlc, ResultCode, RtuLink

from .conveyor import BeltSettings, RejectGate
from .harness import LINE, REJECT_PIN, CellSettings, SimulatedCell
from .plc import SimPlc

BELT = BeltSettings(parts_per_minute=400, belt_speed_mps=0.5, reject_distance_m=0.3)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def bench_line(parts: int, mode: str) -> None:
    with SimulatedCell(CellSettings(seed=2024, belt=BELT, timed_reject=mode)) as cell:
        batch = cell.make_parts(parts)
        card = cell.run(batch)
        time.sleep(BELT.travel_s + 0.3)
        kicks = RejectGate(cell.pins.pin(REJECT_PIN), BELT, 0.03).kicks(batch)
        health = cell.app.health()
    errors = [k.error_ms for k in kicks if k.error_ms is not None]
    abs_errors = [abs(e) for e in errors]
    timing = health["lines"][LINE]["reject_timing"]
    print(f"line, {mode}-timed reject: {parts} parts at {BELT.parts_per_minute:.0f}/min, "
          f"{BELT.travel_s / BELT.pitch_s:.0f} parts in transit")
    print(f"  trigger -> PLC result      p50 {card.percentile(50):6.1f} ms   p99 {card.percentile(99):6.1f} ms")
    print(f"  reject timing error |gate| p50 {pct(abs_errors, 50):6.2f} ms   p99 {pct(abs_errors, 99):6.2f} ms"
          f"   max {max(abs_errors, default=float('nan')):.2f} ms   (signed mean {sum(errors) / max(1, len(errors)):+.2f} ms)")
    print(f"  kicks {len(kicks)} (empty belt {sum(k.part_index is None for k in kicks)}), late results "
          f"{timing['late_results']}, no result {timing['no_result']}, PLC verified writes p50/p99 "
          f"{health['plc']['write_ms_p50']} / {health['plc']['write_ms_p99']} ms")


def bench_writes(plc: ModbusPlc, writes: int) -> list[float]:
    samples = []
    for n in range(writes):
        started = time.perf_counter()
        if not plc.write_result(n + 1, ResultCode.PASS, 0, reject=False, trigger_id=n + 1):
            raise RuntimeError(f"write {n + 1} failed: {plc.stats()['last_error']}")
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    print(f"  {name:<22} p50 {pct(samples, 50):6.2f} ms   p99 {pct(samples, 99):6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=300)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    if args.parts:
        bench_line(args.parts, "delay")
        bench_line(args.parts // 2, "encoder")
    print(f"verified result writes (block + coil, each read back), {args.writes} each:")
    with SimPlc() as sim, ModbusTcpPlc("127.0.0.1", sim.port) as plc:
        report("Modbus TCP loopback", bench_writes(plc, args.writes))
    if shutil.which("socat") is None:
        print("  Modbus RTU: skipped (socat not installed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                                 stderr=subprocess.DEVNULL)
        try:
            while not (a.exists() and b.exists()):
                time.sleep(0.01)
            with SimPlc(serial_port=str(b), baudrate=115200, parity="N") as sim, \
                    ModbusPlc(RtuLink(str(a), baudrate=115200, parity="N"), timeout_s=0.5) as plc:
                while not plc.connected:
                    time.sleep(0.01)
                report("Modbus RTU pty 115200", bench_writes(plc, args.writes))
        finally:
            socat.terminate()
            socat.wait(5)


if __name__ == "__main__":
    main()
