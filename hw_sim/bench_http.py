"""HTTP actions benchmark: what a webhook costs the line, and how fast a backlog drains.

    .venv/bin/python -m hw_sim.bench_http [--calls 2000] [--rounds 3]

- enqueue: publish_event as a line calls it, the MQTT event alone and with one webhook (the
  event and its call in one committed transaction), and with the webhook's POS hanging;
  per-call p50/p99;
- raw requests: one requests.Session POSTing the same bodies to the simulated POS
  (hw_sim.pos.SimPos on loopback), one after the other;
- drain: the same calls committed while the POS is down, then it comes up and the action
  sends them all, until the last row is deleted on its 2xx.

Each figure is the median of --rounds rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import requests

from agent.act.http import HttpAction, HttpActionSettings, PublisherWithHttp
from agent.deliver.mqtt import MqttPublisher, MqttSettings
from agent.deliver.outbox import Outbox, OutboxSettings, OutboxStore

from .bench_outbox import sample_event
from .pos import SimPos

LINE = "inspect"
TARGET = f"{LINE}/pos"


class _Cell:
    def __init__(self, path: Path, url: str | None, start: bool = True):
        self.store = OutboxStore(OutboxSettings(path=path))
        link = MqttPublisher(MqttSettings(host="127.0.0.1", port=9, device_id="bench"))  # never started
        self.outbox = Outbox(self.store, link)
        self.actions = []
        if url is not None:
            self.actions.append(HttpAction(TARGET, HttpActionSettings(url, timeout_s=0.5, backoff_s=0.05,
                                                                      backoff_max_s=0.2), self.store.http))
            if start:
                self.actions[0].start()
        self.publisher = PublisherWithHttp(self.outbox, self.actions)

    def delivered(self) -> int:
        return self.store.http.counters(TARGET)["delivered"]

    def close(self) -> None:
        for action in self.actions:
            action.close(0.2)
        self.store.close()


def _percentiles_us(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples) * 1e6, samples[int(0.99 * (len(samples) - 1))] * 1e6


def bench_enqueue(path: Path, calls: int, url: str | None) -> tuple[float, float, float]:
    """(calls/s, p50 us, p99 us) of publish_event."""
    cell = _Cell(path, url)
    try:
        events = [sample_event(i) for i in range(calls)]
        took = []
        t0 = time.perf_counter()
        for event in events:
            started = time.perf_counter()
            cell.publisher.publish_event(LINE, event)
            took.append(time.perf_counter() - started)
        rate = calls / (time.perf_counter() - t0)
        return (rate, *_percentiles_us(took))
    finally:
        cell.close()


def bench_raw(url: str, calls: int) -> float:
    """POSTs per second, one requests.Session, one call at a time."""
    bodies = [json.dumps(sample_event(i), separators=(",", ":")).encode() for i in range(calls)]
    with requests.Session() as session:
        t0 = time.perf_counter()
        for i, body in enumerate(bodies):
            response = session.post(url, data=body, timeout=2, headers={"Content-Type": "application/json",
                                                                        "Idempotency-Key": str(i)})
            response.raise_for_status()
        return calls / (time.perf_counter() - t0)


def bench_drain(path: Path, calls: int, pos: SimPos) -> float:
    """Calls per second, from the POS coming back to the last row deleted."""
    pos.stop()
    cell = _Cell(path, pos.url, start=False)
    try:
        for i in range(calls):
            cell.publisher.publish_event(LINE, sample_event(i))
        pos.start()
        t0 = time.perf_counter()
        cell.actions[0].start()
        while cell.delivered() < calls:
            time.sleep(0.005)
        return calls / (time.perf_counter() - t0)
    finally:
        cell.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the hung and the down POS are meant to fail
    results: dict[str, list] = {k: [] for k in ("mqtt only", "with webhook", "with hung webhook", "raw", "drain")}
    with tempfile.TemporaryDirectory() as tmp, SimPos() as pos, SimPos() as hung:
        hung.answer(200, hang_s=3600)
        for r in range(args.rounds):
            work = Path(tmp) / str(r)
            work.mkdir()
            results["mqtt only"].append(bench_enqueue(work / "a.db", args.calls, None))
            results["with webhook"].append(bench_enqueue(work / "b.db", args.calls, pos.url))
            results["with hung webhook"].append(bench_enqueue(work / "c.db", args.calls, hung.url))
            results["raw"].append(bench_raw(pos.url, args.calls))
            results["drain"].append(bench_drain(work / "d.db", args.calls, pos))
    size = len(json.dumps(sample_event(0), separators=(",", ":")))
    print(f"{args.calls} calls of {size} B, median of {args.rounds} rounds")
    for name in ("mqtt only", "with webhook", "with hung webhook"):
        rate, p50, p99 = (statistics.median(x[i] for x in results[name]) for i in range(3))
        print(f"  enqueue, {name:<18} {rate:8,.0f} events/s   p50 {p50:6.0f} us   p99 {p99:6.0f} us")
    raw, drain = statistics.median(results["raw"]), statistics.median(results["drain"])
    print(f"  raw requests.Session POSTs  {raw:8,.0f} calls/s")
    print(f"  backlog drain to the POS    {drain:8,.0f} calls/s ({drain / raw:.0%} of raw)")


if __name__ == "__main__":
    main()
