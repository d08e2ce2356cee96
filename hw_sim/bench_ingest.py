"""Ingest benchmarks: motion cost per frame, idle CPU of a watched camera, sensor edge to frame.

    .venv/bin/python -m hw_sim.bench_ingest [--seconds 10]

1. Motion detection on 640x480 simulator frames, OpenCV pinned to one thread: ms per frame.
2. Idle CPU: a 640x480 15 fps stream of the empty belt (Debian's ffmpeg, with sensor noise),
   read by the agent's stream source with the motion trigger on every frame, nothing moving.
   CPU time of this process (decode + motion + threads) over wall time, in % of one core.
   The ffmpeg server is another process and is not counted.
3. Sensor edge to captured frame: a gpiozero MockFactory edge -> EdgeInput -> the trigger's
   frame reservation -> the line-side grab returns. For the 15 fps stream (the wait for the
   next frame dominates) and for the HTTP snapshot camera (fetched on the edge).
4. PLC trigger: the SimPlc (pymodbus over loopback TCP) writes a part's trigger id and part
   present -> the agent's PlcTrigger polls it every 10 ms through ModbusPlc -> reservation
   -> grab returns. Measured from the moment the registers held the new id.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import cv2
import numpy as np

from agent.act.plc import ModbusTcpPlc
from agent.gpio import EdgeInput
from agent.ingest.camera import HttpSnapshotCamera
from agent.ingest.motion import MotionDetector, MotionTrigger
from agent.ingest.plc_trigger import PlcTrigger
from agent.ingest.sources import LiveSource, stream_opener

from .camera import SimCamera, encode_jpeg
from .plc import SimPlc
from .scene import PartRenderer
from .streams import StreamServer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def bench_motion(frames: int = 2000) -> dict:
    renderer = PartRenderer(seed=5)
    images = [renderer.render_empty_belt() for _ in range(40)] + [renderer.render().image for _ in range(10)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        detector = MotionDetector()
        for image in images:
            detector.detect(image)
        times = []
        for i in range(frames):
            image = images[i % len(images)]
            start = time.perf_counter()
            detector.detect(image)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        cv2.setNumThreads(threads)
    return {"mean": statistics.fmean(times), "p50": percentile(times, 50), "p99": percentile(times, 99)}


def bench_idle_cpu(seconds: float) -> dict:
    empty = PartRenderer(seed=5).render_empty_belt()
    with StreamServer(image=empty, fps=15, noise=4) as server:
        source = LiveSource("cam0", stream_opener(server.url), "stream", describe=server.url)
        source.start()
        fires: list[float] = []
        trigger = MotionTrigger(source, MotionDetector(), fires.append, cooldown_s=1.0)
        try:
            deadline = time.monotonic() + 15
            while not source.online and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.0)  # past the connect burst
            frames0, cpu0, wall0 = source.stats()["frames"], time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            frames = source.stats()["frames"] - frames0
            motion = trigger.stats()
        finally:
            trigger.close()
            source.close()
    return {"cpu_pct": 100 * cpu / wall, "fps": frames / wall, "fires": len(fires),
            "motion_ms": motion["ms_per_frame"]}


def _signal_latencies(camera, start_trigger, signal, edges: int, spacing_s: float) -> list[float]:
    """start_trigger(on_fire) -> the running trigger; signal() raises the sensor or PLC signal and
    returns when it was raised. Latency: signal raised -> the line-side grab returned its frame."""
    pending: list[float] = []
    lock = threading.Condition()

    def on_fire(t_mono: float, weight_g=None, plc_trigger_id=None) -> None:  # what the app's wiring does
        camera.expect(t_mono)
        with lock:
            pending.append(t_mono)
            lock.notify()

    captured: list[float] = []

    def capture() -> None:  # what the line's capture thread does
        for _ in range(edges):
            with lock:
                if not lock.wait_for(lambda: pending, timeout=5.0):
                    return
                t_trigger = pending.pop(0)
            if camera.grab(after=t_trigger) is not None:
                captured.append(time.monotonic())

    trigger = start_trigger(on_fire)
    worker = threading.Thread(target=capture, daemon=True)
    worker.start()
    rng = np.random.default_rng(3)
    raised = []
    for _ in range(edges):
        time.sleep(spacing_s + float(rng.uniform(0, spacing_s)))
        raised.append(signal())
    worker.join(10)
    trigger.close()
    if len(captured) != len(raised):
        print(f"  ({len(raised) - len(captured)} of {len(raised)} signals got no frame)")
    return [(done - t) * 1000 for t, done in zip(raised, captured)]


def _edge_latencies(camera, edges: int, spacing_s: float) -> list[float]:
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    pin = factory.pin(17)

    def edge() -> float:
        t = time.monotonic()
        pin.drive_high()
        pin.drive_low()
        return t

    return _signal_latencies(camera, lambda on_fire: EdgeInput(17, factory, on_fire, debounce_s=0.001), edge,
                             edges, spacing_s)


def _plc_latencies(camera, edges: int, spacing_s: float, poll_s: float = 0.01) -> list[float]:
    with SimPlc() as sim, ModbusTcpPlc("127.0.0.1", sim.port) as plc:
        def part() -> float:
            sim.present_part()
            t = sim.presented[-1].t_mono  # the registers held the new id from here on
            sim.clear_part()
            return t

        return _signal_latencies(camera, lambda on_fire: PlcTrigger(plc, on_fire, poll_s=poll_s), part,
                                 edges, spacing_s)


def bench_signal_to_frame(edges: int) -> dict:
    results = {}
    with StreamServer(image=PartRenderer(seed=5).render_empty_belt(), fps=15, noise=4) as server:
        source = LiveSource("cam0", stream_opener(server.url), "stream", describe=server.url)
        source.start()
        try:
            deadline = time.monotonic() + 15
            while not source.online and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            results["sensor edge -> captured frame, stream 15 fps"] = _edge_latencies(source, edges, 0.1)
            results["PLC part present -> captured frame, stream 15 fps"] = _plc_latencies(source, edges, 0.1)
        finally:
            source.close()
    with SimCamera() as sim:
        sim.show(encode_jpeg(PartRenderer(seed=5).render().image))
        camera = HttpSnapshotCamera("cam0", sim.url)
        results["sensor edge -> captured frame, http snapshot"] = _edge_latencies(camera, edges, 0.05)
        results["PLC part present -> captured frame, http snapshot"] = _plc_latencies(camera, edges, 0.05)
    return {name: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)} for name, v in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure idle CPU")
    parser.add_argument("--edges", type=int, default=60, help="sensor edges per camera")
    args = parser.parse_args(argv)

    motion = bench_motion()
    print(f"motion, 640x480, one thread: {motion['mean']:.3f} ms/frame mean, "
          f"p50 {motion['p50']:.3f}, p99 {motion['p99']:.3f}")
    idle = bench_idle_cpu(args.seconds)
    print(f"idle CPU, 640x480 {idle['fps']:.1f} fps stream + motion on every frame, nothing moving: "
          f"{idle['cpu_pct']:.1f}% of one core (motion {idle['motion_ms']:.2f} ms/frame, fires {idle['fires']})")
    for name, row in bench_signal_to_frame(args.edges).items():
        print(f"{name}: p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms ({row['n']} signals)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
