"""Outbox benchmark: enqueue rate, and drain rate beside raw paho publishing of the same messages.

    .venv/bin/python -m hw_sim.bench_outbox [--events 20000] [--rounds 3]

- enqueue: Outbox.publish_event, one committed SQLite transaction per event (what a line
  does), and publish_crop with 20 KB JPEGs;
- raw paho: a paho client publishing the same topics, payloads and properties at QoS 1
  (20 in flight, paho's default and mosquitto's Receive Maximum) until the last PUBACK;
- drain: the same messages committed to the outbox while the link is down, then the link
  comes up and the outbox sends them all (no rate limit) until the last row is deleted.

Raw and drain alternate for --rounds rounds against one mosquitto on loopback, with no
subscriber; each figure is the median. Goals (issue 5): enqueue >= 10,000 events/s, drain
>= 80% of raw paho.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.deliver.mqtt import MqttPublisher, MqttSettings
from agent.deliver.outbox import Outbox, OutboxSettings, OutboxStore

from .broker import MosquittoBroker

DEVICE = "bench"
LINE = "inspect"
ENQUEUE_GOAL = 10_000
DRAIN_GOAL = 0.80


def sample_event(i: int) -> dict:
    """An event as a line sends it: two defects, as in the README."""
    return {
        "schema": 1, "event_id": str(uuid.UUID(int=i)), "device_id": DEVICE, "line": LINE,
        "inspection_id": i + 1, "ts": 1764090000.123 + i, "trigger": {"source": "gpio", "seq": i + 1},
        "result": "reject", "reason": "2 rejecting defect(s), worst scratch 0.91",
        "defects": [
            {"label": "scratch", "score": 0.91, "box": [312.0, 140.5, 371.2, 166.0], "crop": 0},
            {"label": "dent", "score": 0.62, "box": [102.4, 300.1, 131.0, 327.9], "crop": 1},
        ],
        "frame": {"camera": "cam0", "seq": i + 1, "width": 640, "height": 480},
        "model": "defects:inspection-detector.xml",
        "timings_ms": {"capture": 2.1, "infer": 4.0, "detect": 6.3, "act": 0.6, "total": 9.2},
    }


def _payload(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def bench_enqueue(workdir: Path, events: int) -> tuple[float, float, float]:
    """(events/s, crops/s, crop MB/s), committing one message per call."""
    store = OutboxStore(OutboxSettings(path=workdir / "enqueue.db"))
    link = MqttPublisher(MqttSettings(host="127.0.0.1", port=9, device_id=DEVICE))  # never started
    outbox = Outbox(store, link)
    try:
        samples = [sample_event(i) for i in range(events)]
        t0 = time.perf_counter()
        for event in samples:
            outbox.publish_event(LINE, event)
        event_rate = events / (time.perf_counter() - t0)
        jpeg = b"\xff\xd8" + bytes(range(256)) * 80  # 20 KB
        crops = max(500, events // 10)
        t0 = time.perf_counter()
        for i in range(crops):
            outbox.publish_crop(LINE, samples[i % events]["event_id"], 0, jpeg,
                                {"schema": 1, "label": "scratch", "score": 0.91, "crop": "1,2,3,4"})
        seconds = time.perf_counter() - t0
        assert store.counters()["produced"] == events + crops
    finally:
        outbox.close(0)
        store.close()
    return event_rate, crops / seconds, crops * len(jpeg) / seconds / 1e6


def bench_raw_paho(broker: MosquittoBroker, events: int) -> float:
    """Messages/s from the first publish to the last PUBACK."""
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties):
        nonlocal acked
        acked += 1
        if acked == events:
            done.set()

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"raw-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not connected.wait(5):
            raise RuntimeError(f"raw paho could not connect to {broker.host}:{broker.port}")
        topic = f"edge/{DEVICE}/events/{LINE}"
        payloads = [_payload(sample_event(i)) for i in range(events)]
        t0 = time.perf_counter()
        for seq, payload in enumerate(payloads, 1):
            props = Properties(PacketTypes.PUBLISH)  # the same properties the outbox sends
            props.ContentType = "application/json"
            props.UserProperty = [("seq", str(seq))]
            props.MessageExpiryInterval = 259200
            client.publish(topic, payload, qos=1, properties=props)
        if not done.wait(120):
            raise RuntimeError(f"raw paho: {acked} of {events} acknowledged after 120 s")
        return events / (time.perf_counter() - t0)
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()  # noqa: SLF001


def bench_drain(broker: MosquittoBroker, workdir: Path, events: int, window: int) -> float:
    """Messages/s from the link coming up to the last row deleted on its PUBACK."""
    path = workdir / f"drain-{uuid.uuid4().hex[:6]}.db"
    store = OutboxStore(OutboxSettings(path=path, drain_rate_per_s=0, inflight_window=window))
    link = MqttPublisher(MqttSettings(host=broker.host, port=broker.port, device_id=DEVICE,
                                      client_id=f"drain-{uuid.uuid4().hex[:6]}"), session=store.session)
    outbox = Outbox(store, link)
    try:
        for i in range(events):
            outbox.publish_event(LINE, sample_event(i))
        outbox.start()
        link.start()
        deadline = time.monotonic() + 10
        while not link.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the link did not connect to {broker.host}:{broker.port}")
            time.sleep(0.001)
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while store.counters()["pending"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"drain: {store.counters()['pending']} still pending after 120 s")
            time.sleep(0.002)
        rate = events / (time.perf_counter() - t0)
        assert store.counters()["delivered"] == events
        return rate
    finally:
        outbox.close(0.5)
        link.close(0.5)
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.bench_outbox", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=64, help="outbox.inflight_window")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp, \
            MosquittoBroker(workdir=Path(tmp) / "mosquitto") as broker:
        workdir = Path(tmp)
        enqueue = [bench_enqueue(workdir / f"e{r}", args.events) for r in range(args.rounds)]
        raw, drain = [], []
        for _ in range(args.rounds):
            raw.append(bench_raw_paho(broker, args.events))
            drain.append(bench_drain(broker, workdir, args.events, args.window))

    event_rate = statistics.median(e[0] for e in enqueue)
    crop_rate = statistics.median(e[1] for e in enqueue)
    crop_mb = statistics.median(e[2] for e in enqueue)
    raw_rate, drain_rate = statistics.median(raw), statistics.median(drain)
    size = len(_payload(sample_event(0)))
    rows = [
        ("enqueue events (1 commit each)", f"{event_rate:,.0f} events/s", f"goal >= {ENQUEUE_GOAL:,}",
         "ok" if event_rate >= ENQUEUE_GOAL else "MISSED"),
        ("enqueue crops (20 KB JPEG)", f"{crop_rate:,.0f} crops/s", f"{crop_mb:,.0f} MB/s", ""),
        ("raw paho, QoS 1, to last PUBACK", f"{raw_rate:,.0f} msgs/s", "", ""),
        ("outbox drain, to last delete", f"{drain_rate:,.0f} msgs/s", f"{drain_rate / raw_rate:.0%} of raw paho "
         f"(goal >= {DRAIN_GOAL:.0%})", "ok" if drain_rate >= DRAIN_GOAL * raw_rate else "MISSED"),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Outbox benchmark: mosquitto on loopback, {args.events:,} events of {size} B, "
          f"window {args.window}, median of {args.rounds}")
    print(f"  (load average {load} on {os.cpu_count()} CPUs: other work on the machine moves these figures)")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
