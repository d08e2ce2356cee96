"""Frame sources: one interface, newest-frame buffering, triggered capture, the stall watchdog,
file and folder playback, V4L2 and stream opens that fail fast, GPIO debounce, and config."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import ConfigError, load_config
from agent.gpio import EdgeInput
from agent.ingest.camera import HttpSnapshotCamera
from agent.ingest.sources import (
    Backoff, LiveSource, SourceUnavailable, file_opener, folder_opener, stream_opener, v4l2_opener,
)
from hw_sim.camera import SimCamera, encode_jpeg

EXAMPLE = Path(__file__).resolve().parents[1] / "provisioning" / "inspection.example.yaml"


def wait_until(predicate, timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


class TickingReader:
    """A camera that delivers a small frame every 1/fps s; `hang` makes read() block for good."""

    def __init__(self, fps: float, hang: threading.Event | None = None):
        self._period = 1.0 / fps
        self._next = time.monotonic()
        self._hang = hang
        self.closed = False

    def read(self):
        if self._hang is not None and self._hang.is_set():
            threading.Event().wait(3600)  # a driver that ignores every timeout
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self._period, time.monotonic())
        return np.zeros((8, 8, 3), np.uint8)

    def close(self):
        self.closed = True


def test_backoff_doubles_with_jitter_up_to_its_cap():
    backoff, rng = Backoff(initial_s=0.5, max_s=8.0), random.Random(1)
    delays = [[backoff.delay(attempt, rng) for _ in range(200)] for attempt in range(8)]
    for attempt, values in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2 ** attempt)
        assert ceiling / 2 <= min(values) and max(values) <= ceiling
        assert max(values) - min(values) > ceiling / 4  # jittered, not one fixed value


def test_live_source_keeps_only_the_newest_frame_and_counts_drops():
    with LiveSource("cam", lambda stop: TickingReader(200), "test") as source:
        first = source.next_frame(2.0)
        time.sleep(0.2)  # a slow consumer: ~40 frames arrive meanwhile
        newest = source.next_frame(1.0)
        stats = source.stats()
    assert first is not None and newest is not None
    assert newest.seq - first.seq > 10  # it skipped to the newest, it did not queue
    assert stats["dropped"] >= newest.seq - first.seq - 2
    assert stats["online"] and stats["frames"] >= newest.seq
    assert newest.camera == "cam" and newest.t_mono > first.t_mono and abs(newest.t_wall - time.time()) < 5


def test_triggered_capture_keeps_the_first_frame_at_or_after_the_trigger():
    with LiveSource("cam", lambda stop: TickingReader(100), "test") as source:
        assert source.next_frame(2.0) is not None
        t_trigger = time.monotonic()
        source.expect(t_trigger)  # what the trigger's wiring does at once
        time.sleep(0.3)  # the line is busy: ~30 newer frames arrive before it asks
        frame = source.grab(after=t_trigger)
        newest = source.next_frame(1.0)
    assert frame is not None
    assert t_trigger <= frame.t_mono < t_trigger + 0.05
    assert newest.seq - frame.seq > 10
    assert source.stats()["pending_triggers"] == 0


def test_grab_without_a_reservation_waits_for_the_next_frame():
    with LiveSource("cam", lambda stop: TickingReader(50), "test") as source:
        assert source.next_frame(2.0) is not None
        asked = time.monotonic()
        frame = source.grab()
    assert frame is not None and frame.t_mono >= asked


def test_watchdog_reports_a_hung_read_and_replaces_the_reader():
    hang = threading.Event()
    opens = []

    def opener(stop):
        opens.append(time.monotonic())
        return TickingReader(50, hang if len(opens) == 1 else None)

    source = LiveSource("cam", opener, "test", stall_timeout_s=0.5, hang_timeout_s=1.0,
                        backoff=Backoff(initial_s=0.05, max_s=0.1))
    source.start()
    try:
        assert wait_until(lambda: source.online, 3)
        hang.set()
        t_hang = time.monotonic()
        assert wait_until(lambda: not source.online, 3)
        assert time.monotonic() - t_hang < 1.5
        assert wait_until(lambda: source.online and len(opens) == 2, 5)  # a fresh reader took over
        stats = source.stats()
        assert stats["stalls"] == 1 and stats["abandoned_reads"] == 1
        started = time.monotonic()
        assert source.grab(timeout_s=1.0) is not None and time.monotonic() - started < 1.0
    finally:
        source.close()


def test_open_failures_back_off_and_a_grab_while_offline_returns_at_once():
    calls = []

    def failing(stop):
        calls.append(time.monotonic())
        raise SourceUnavailable("unplugged")

    with LiveSource("cam", failing, "test", backoff=Backoff(initial_s=0.1, max_s=0.4)) as source:
        assert wait_until(lambda: len(calls) >= 4, 5)
        started = time.monotonic()
        assert source.grab(timeout_s=2.0) is None
        assert time.monotonic() - started < 0.1
        stats = source.stats()
    assert stats["state"] == "offline" and stats["open_failures"] >= 4 and stats["reconnects"] >= 3
    assert "unplugged" in stats["last_error"] and stats["grabs_while_offline"] == 1
    gaps = np.diff(calls[:4])
    assert gaps[2] > gaps[0]  # backing off


def test_missing_v4l2_device_is_offline_not_fatal():
    with LiveSource("usb", v4l2_opener("/dev/video-missing-99"), "v4l2", backoff=Backoff(0.1, 0.2)) as source:
        assert wait_until(lambda: source.stats()["open_failures"] >= 1, 3)
        assert not source.online and "does not exist" in source.stats()["last_error"]


def test_a_stream_that_accepts_but_never_answers_times_out_on_open():
    """OpenCV's default open timeout is 30 s; ours is what the config says."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.ts"
        opener = stream_opener(url, open_timeout_ms=800, read_timeout_ms=800)
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            opener(threading.Event())
        assert time.monotonic() - started < 4.0


def _write_images(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        image = np.full((48, 64, 3), i * 20, np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    (folder / "notes.txt").write_text("not an image")


def test_folder_source_plays_images_in_order_in_real_time_and_loops(tmp_path):
    _write_images(tmp_path / "images", 3)
    with LiveSource("shelf", folder_opener(tmp_path / "images", fps=20), "folder") as source:
        frames = [source.next_frame(2.0) for _ in range(7)]
    levels = [int(f.image[0, 0, 0]) for f in frames]
    start = levels.index(0)
    assert levels[start:start + 4] == [0, 20, 40, 0]  # in name order, looping
    span = frames[-1].t_mono - frames[0].t_mono
    assert 0.2 < span < 0.6  # paced at 20 fps, not as fast as the disk
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})


def test_folder_source_without_loop_ends(tmp_path):
    _write_images(tmp_path / "images", 2)
    with LiveSource("shelf", folder_opener(tmp_path / "images", fps=50, loop=False), "folder") as source:
        assert wait_until(lambda: source.stats()["state"] == "ended", 3)
        assert source.stats()["frames"] == 2 and source.grab() is None


def test_file_source_plays_a_video_at_its_frame_rate_and_loops(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    with LiveSource("replay", file_opener(path), "file") as source:
        frames = [source.next_frame(2.0) for _ in range(12)]
    assert all(f is not None and f.image.shape == (48, 64, 3) for f in frames)
    assert 0.3 < frames[-1].t_mono - frames[0].t_mono < 0.8  # 11 intervals at 25 fps
    assert source.stats()["read_ends"] == 0  # looping is not a reconnect


def test_missing_file_is_reported_in_health(tmp_path):
    with LiveSource("replay", file_opener(tmp_path / "nope.mp4"), "file", backoff=Backoff(0.1, 0.2)) as source:
        assert wait_until(lambda: source.stats()["open_failures"] >= 1, 3)
        assert "no such file" in source.stats()["last_error"]


def test_http_snapshot_camera_has_the_same_interface():
    with SimCamera() as sim:
        sim.show(encode_jpeg(np.full((48, 64, 3), 90, np.uint8)))
        camera = HttpSnapshotCamera("snap", sim.url)
        camera.start()
        t = time.monotonic()
        camera.expect(t)
        frame = camera.grab(after=t)
        again = camera.next_frame(1.0)
        camera.close()
    assert frame.camera == "snap" and frame.t_mono >= t and again.seq == frame.seq + 1
    assert camera.stats()["online"] and camera.stats()["type"] == "http_snapshot"


def test_inspection_line_gets_the_frame_of_each_trigger_even_when_behind():
    from agent.lines.inspection import InspectionLine
    from agent.postprocess.inspection_rule import DefectRule

    seen: list = []

    class SlowDetector:
        last_infer_ms = 0.0

        def detect(self, image, conf_threshold):
            time.sleep(0.05)
            return []

    class Recorder:
        def publish_event(self, line, event):
            seen.append(event)

        def publish_crop(self, *args):
            pass

    with LiveSource("cam", lambda stop: TickingReader(100), "test") as source:
        assert source.next_frame(2.0) is not None
        grabbed = []

        class Watched:  # the line's view of the camera, recording what each grab returned
            def grab(self, after=None, timeout_s=None):
                frame = source.grab(after, timeout_s)
                grabbed.append((after, frame))
                return frame

        line = InspectionLine("inspect", "box", Watched(), SlowDetector(), DefectRule(0.5, {}), None, Recorder())
        line.start()
        triggers = []
        for _ in range(5):  # a burst: the capture thread is busy while the next ones come
            t = time.monotonic()
            source.expect(t)
            triggers.append(line.on_trigger(t, "gpio"))
            time.sleep(0.013)
        assert wait_until(lambda: len(seen) == 5, 5)
        line.stop()
    assert [after for after, _ in grabbed] == [t.t_mono for t in triggers]
    for trigger, (_, frame) in zip(triggers, grabbed):
        # The first frame at or after the trigger (100 fps), though the line asked up to 0.2 s later.
        assert trigger.t_mono <= frame.t_mono < trigger.t_mono + 0.05
    assert all(event["result"] == "pass" and event["frame"]["camera"] == "cam" for event in seen)
    assert source.stats()["pending_triggers"] == 0 and source.stats()["grab_timeouts"] == 0


def test_gpio_edge_is_debounced_on_the_mock_factory():
    factory = MockFactory()
    edges: list[float] = []
    sensor = EdgeInput(17, factory, edges.append, edge="rising", debounce_s=0.02)
    pin = factory.pin(17)
    try:
        for _ in range(5):  # contact chatter within 1 ms
            pin.drive_high()
            pin.drive_low()
        time.sleep(0.03)
        pin.drive_high()  # a second part, after the debounce time
        pin.drive_low()
    finally:
        sensor.close()
    assert len(edges) == 2 and sensor.bounces == 4 and edges[1] - edges[0] >= 0.02


def _config_with(tmp_path, cameras: str, trigger: str) -> Path:
    text = EXAMPLE.read_text()
    start = text.index("cameras:")
    end = text.index("lines:")
    text = text[:start] + cameras + "\n" + text[end:]
    t_start = text.index("    trigger:\n")
    t_end = text.index("    default_threshold")
    text = text[:t_start] + trigger + text[t_end:]
    text = text.replace("../models/", str(EXAMPLE.parent.parent / "models") + "/")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


CAMERAS = """cameras:
  cam0:
    type: stream
    url: rtsp://user:secret@10.0.0.7:554/stream1
    rtsp_transport: tcp
    open_timeout_ms: 4000
    read_timeout_ms: 2000
  usb:
    type: v4l2
    device: /dev/video0
    width: 1280
    height: 720
    fourcc: MJPG
  replay:
    type: file
    path: /srv/clips/belt.mp4
  shelf:
    type: folder
    path: /srv/images
    fps: 2
"""


@pytest.mark.parametrize("trigger, kind", [
    ("    trigger:\n      type: motion\n      threshold: 30\n      min_area: 0.02\n      cooldown_ms: 500\n"
     "      mask:\n        - [[0, 0], [640, 0], [640, 40]]\n", "motion"),
    ("    trigger:\n      type: scale\n      port: /dev/ttyUSB0\n      protocol: toledo\n      bytesize: 7\n"
     "      parity: E\n      threshold_g: 10\n", "scale"),
])
def test_config_takes_the_new_cameras_and_triggers(tmp_path, trigger, kind):
    config = load_config(_config_with(tmp_path, CAMERAS, trigger))
    assert {c.type for c in config.cameras.values()} == {"stream", "v4l2", "file", "folder"}
    assert config.lines["inspect"].trigger.type == kind


@pytest.mark.parametrize("cameras, trigger, expected", [
    (CAMERAS.replace("/srv/clips/belt.mp4", "clips/belt.mp4"), "    trigger:\n      type: interval\n      period_ms: 100\n",
     "cameras.replay.path: clips/belt.mp4: use an absolute path"),
    (CAMERAS, "    trigger:\n      type: motion\n      camera: nope\n", "lines.inspect.trigger.camera: no camera named 'nope'"),
    (CAMERAS, "    trigger:\n      type: scale\n      port: /dev/ttyUSB0\n      protocol: sics\n",
     "lines.inspect.trigger.protocol: input should be 'mtsics' or 'toledo'"),
    (CAMERAS.replace("rtsp_transport: tcp", "rtsp_transport: http"), "    trigger:\n      type: interval\n      period_ms: 100\n",
     "cameras.cam0.rtsp_transport: input should be 'tcp' or 'udp'"),
])
def test_config_errors_in_the_new_keys_name_the_field(tmp_path, cameras, trigger, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_config_with(tmp_path, cameras, trigger))
    assert expected in str(info.value)
