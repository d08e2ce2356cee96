"""Command reply latency: `status` (and `ping`) round trips through mosquitto to a real agent.

    .venv/bin/python -m hw_sim.bench_commands [--requests 1000] [--parts 0]

The simulated cell runs the agent (model loaded, line started). A client sends one request
at a time with an MQTT 5 Response Topic and Correlation Data and waits for its reply: the
figure is publish -> reply received, on loopback. Each request is signed (Ed25519) and the
device requires signatures, so verification, the replay store and the audit log are in the
path. --parts N keeps parts flowing through the line while measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from agent.control.auth import generate_keypair, load_private_key
from agent.control.ctl import build_request
from agent.deliver.mqtt import MqttRequester

from .conveyor import BeltSettings
from .harness import DEVICE_ID, CellSettings, SimulatedCell


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure(requester: MqttRequester, key, command: str, count: int) -> list[float]:
    latencies = []
    topic = f"edge/{DEVICE_ID}/cmd/{command}"
    for _ in range(count):
        payload = json.dumps(build_request(DEVICE_ID, command, {}, key=key)).encode()
        t0 = time.perf_counter()
        raw = requester.request(topic, payload, timeout_s=5)
        elapsed = (time.perf_counter() - t0) * 1000
        if raw is None or not json.loads(raw)["ok"]:
            raise RuntimeError(f"{command}: no ok reply ({raw!r})")
        latencies.append(elapsed)
    return latencies


def render(name: str, values: list[float]) -> str:
    return (f"  {name:<8} n={len(values):<5} p50 {percentile(values, 50):6.2f} ms   p90 {percentile(values, 90):6.2f} ms"
            f"   p99 {percentile(values, 99):6.2f} ms   max {max(values):6.2f} ms   mean {statistics.fmean(values):6.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per command (default 1000)")
    parser.add_argument("--parts", type=int, default=0, help="parts to run through the line meanwhile (default 0)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cmd-") as tmp:
        private, public = generate_keypair(Path(tmp) / "ops.pem")
        key = load_private_key(private)
        control = {"require_signature": True, "public_keys": [str(public)], "queue_size": 64}
        settings = CellSettings(belt=BeltSettings(parts_per_minute=240), control=control)
        with SimulatedCell(settings) as cell:
            runner = None
            if args.parts:
                parts = cell.make_parts(args.parts)
                runner = threading.Thread(target=cell.run, args=(parts,), name="conveyor")
                runner.start()
            with MqttRequester(cell.broker.host, cell.broker.port,
                               reply_topic=f"edge/{DEVICE_ID}/replies/bench") as requester:
                measure(requester, key, "status", 20)  # warm up
                status = measure(requester, key, "status", args.requests)
                ping = measure(requester, key, "ping", args.requests)
            if runner is not None:
                runner.join()
            inspections = cell.app.lines[next(iter(cell.app.lines))].counters["inspections"]
    print(f"command reply latency, signed, mosquitto on loopback, {os.cpu_count()} CPUs, "
          f"line {'inspecting ' + str(inspections) + ' parts' if args.parts else 'idle'}:")
    print(render("status", status))
    print(render("ping", ping))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
