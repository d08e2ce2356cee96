"""The sd_notify path against a real NOTIFY_SOCKET datagram socket: the protocol, READY after the
first frame, the WATCHDOG cadence, pings stopping while a stage is stuck, and `edge-agent run`
under a fake service manager (READY, WATCHDOG, SIGHUP reload, STOPPING)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.infer.engine import Detector
from agent.ingest.camera import HttpSnapshotCamera
from agent.lines.inspection import InspectionLine
from agent.postprocess.inspection_rule import DefectRule
from agent.runtime.sdnotify import Notifier, watchdog_timeout
from agent.runtime.watchdog import ServiceWatchdog
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.harness import agent_config
from hw_sim.plc import SimPlc
from tiny_ir import save_tiny_detector


class ServiceManager:
    """The service manager's end of NOTIFY_SOCKET: a bound datagram socket, and a thread that
    records each message with the time it arrived."""

    def __init__(self, abstract: bool = False):
        if abstract:
            self.address = f"@edge-agent-test-{uuid.uuid4().hex}"
            bind_to = "\0" + self.address[1:]
        else:  # a short path: AF_UNIX paths are limited to 108 bytes
            self._dir = tempfile.TemporaryDirectory(prefix="notify-", dir="/tmp")
            self.address = bind_to = os.path.join(self._dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._cursor = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="service-manager")
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self._lock:
                self._messages.append((time.monotonic(), fields))

    def drain(self, at_least: int = 0, timeout: float = 2.0) -> list[tuple[float, dict[str, str]]]:
        """The messages so far, after waiting (up to timeout) for at least `at_least` of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                messages = list(self._messages)
            if len(messages) >= at_least or time.monotonic() > deadline:
                return messages
            time.sleep(0.01)

    def wait_for(self, predicate, timeout: float) -> dict[str, str]:
        """The first matching message after the one the previous wait_for returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.drain()
            for index in range(self._cursor, len(messages)):
                if predicate(messages[index][1]):
                    self._cursor = index + 1
                    return messages[index][1]
            time.sleep(0.02)
        raise AssertionError(f"no matching message within {timeout} s; got {[m for _, m in self.drain()][-10:]}")

    def times(self, key: str) -> list[float]:
        return [t for t, fields in self.drain() if key in fields]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()
        if hasattr(self, "_dir"):
            self._dir.cleanup()


@pytest.fixture
def manager():
    service_manager = ServiceManager()
    yield service_manager
    service_manager.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_detector(tmp_path_factory.mktemp("model") / "tiny")


def _part_jpeg() -> bytes:
    image = np.full((120, 160, 3), 90, np.uint8)
    image[40:80, 50:110] = 200
    return encode_jpeg(image)


# -- the protocol --------------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_key_value_datagrams(abstract):
    manager = ServiceManager(abstract=abstract)
    try:
        with Notifier(manager.address) as notifier:
            assert notifier.ready("up\nand running")
            assert notifier.watchdog()
            assert notifier.extend_timeout(1.5)
        messages = [fields for _, fields in manager.drain(at_least=3)]
    finally:
        manager.close()
    assert messages == [{"READY": "1", "STATUS": "up and running"}, {"WATCHDOG": "1"},
                        {"EXTEND_TIMEOUT_USEC": "1500000"}]


def test_notifier_without_socket_is_a_no_op():
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False


def test_notifier_survives_a_vanished_socket(manager):
    notifier = Notifier(manager.address)
    manager.close()
    assert notifier.status("nobody listens") is False  # logged once, never raised
    notifier.close()


def test_watchdog_timeout_from_environment():
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_timeout({}) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None  # for another process
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}) is None


# -- READY, cadence, a stuck stage --------------------------------------------------------

class _Service:
    """The two things the watchdog reads from an App: lines and health()."""

    def __init__(self, lines):
        self.lines = lines

    def health(self) -> dict:
        return {"plc": {"connected": True}}


def test_ready_after_first_frame_then_pings_stop_while_capture_is_stuck(manager, tiny_model):
    with SimCamera() as sim_camera:
        sim_camera.show(_part_jpeg())
        line = InspectionLine(
            "inspect", "box-1", HttpSnapshotCamera("cam0", sim_camera.url, timeout_s=5.0), Detector(tiny_model),
            DefectRule(0.4, {}), plc=None, publisher=None)
        watchdog = ServiceWatchdog(Notifier(manager.address), timeout_s=0.5, stall_s=0.5, warm_up_retry_s=0.5)
        stop = threading.Event()

        def main_loop():
            while not stop.wait(watchdog.tick_s):
                watchdog.tick()

        line.start()
        watchdog.attach(_Service({"inspect": line}))
        loop = threading.Thread(target=main_loop)
        loop.start()
        try:
            ready = manager.wait_for(lambda m: m.get("READY") == "1", timeout=20)
            assert line.first_frame_at is not None
            assert ready["STATUS"].startswith("running: 1 line(s), 0 inspections")  # the warm-up is no inspection
            time.sleep(1.5)
            steady = manager.times("WATCHDOG")
            gaps = np.diff(steady[-5:])
            assert len(steady) >= 4 and np.all((gaps > 0.15) & (gaps < 0.45)), gaps  # every 0.25 s

            sim_camera.inject("stall")  # the next snapshot takes 2 s: capture holds its item
            stalled_at = time.monotonic()
            line.on_trigger()
            manager.wait_for(lambda m: m.get("STATUS", "").startswith("stuck: inspect/capture"), timeout=2)
            manager.wait_for(lambda m: m.get("STATUS", "").startswith("running"), timeout=5)
            recovered_at = time.monotonic()
            manager.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=1)
        finally:
            stop.set()
            loop.join()
            line.stop()
    pings = manager.times("WATCHDOG")
    during = [t for t in pings if stalled_at + 0.6 < t < recovered_at - 0.1]
    assert during == []  # no pings while the capture stage was stuck
    assert recovered_at - stalled_at > 1.2
    assert line.counters["inspections"] == 1


def test_not_ready_while_the_camera_is_down(manager, tiny_model):
    line = InspectionLine("inspect", "box-1", HttpSnapshotCamera("cam0", "http://127.0.0.1:9/none.jpg", timeout_s=0.2),
                          Detector(tiny_model), DefectRule(0.4, {}), plc=None, publisher=None)
    watchdog = ServiceWatchdog(Notifier(manager.address), timeout_s=0.5, warm_up_retry_s=0.2, start_extend_s=3)
    line.start()
    try:
        watchdog.attach(_Service({"inspect": line}))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            watchdog.tick()
            time.sleep(watchdog.tick_s)
    finally:
        line.stop()
    time.sleep(0.1)  # the last datagrams in flight
    messages = [fields for _, fields in manager.drain()]
    assert not any("READY" in m or "WATCHDOG" in m for m in messages)
    assert any(m.get("EXTEND_TIMEOUT_USEC") == "3000000" for m in messages)  # the start is alive, keep waiting
    assert any(m.get("STATUS", "").startswith("waiting for the first frame: inspect (no frame (") for m in messages)


# -- `edge-agent run` under a fake service manager ----------------------------------------

def test_run_notifies_reloads_on_sighup_and_stops(manager, tiny_model, tmp_path, broker):
    with SimPlc() as plc, SimCamera() as camera:
        camera.show(_part_jpeg())
        config = agent_config(broker, plc, camera, tiny_model, 0.4, outbox=tmp_path / "outbox.db")
        config["log_level"] = "INFO"
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            manager.wait_for(lambda m: m.get("READY") == "1", timeout=60)
            manager.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=2)

            path.write_text("device: [not a mapping\n")
            proc.send_signal(signal.SIGHUP)
            manager.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5)
            refused = manager.wait_for(lambda m: m.get("READY") == "1", timeout=5)
            assert refused["STATUS"].startswith("reload refused, old config kept: ")
            manager.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=2)  # the old config still runs
            assert proc.poll() is None

            config["lines"]["inspect"]["default_threshold"] = 0.6
            path.write_text(yaml.safe_dump(config))
            proc.send_signal(signal.SIGHUP)
            manager.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5)
            assert manager.wait_for(lambda m: m.get("READY") == "1", timeout=30)["STATUS"] == "config reloaded"
            manager.wait_for(lambda m: m.get("STATUS", "").startswith("running: 1 line(s)"), timeout=30)

            proc.send_signal(signal.SIGTERM)
            manager.wait_for(lambda m: m.get("STOPPING") == "1", timeout=5)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records and all(r["device_id"] == "sim-box" for r in records)
    messages = [r["msg"] for r in records]
    assert any(m.startswith("reload refused, the running config stays: ") for m in messages)
    assert any(m.startswith("reloaded ") for m in messages)
    assert "Traceback" not in err


# -- structured logs: journald fields over a datagram socket, JSON lines -----------------------

def _parse_journal_datagram(data: bytes) -> dict[str, str]:
    fields, rest = {}, data
    while rest:
        head, _, rest = rest.partition(b"\n")
        if b"=" in head:
            key, _, value = head.partition(b"=")
            fields[key.decode()] = value.decode()
        else:  # KEY\n<u64 little-endian length><value>\n
            size = int.from_bytes(rest[:8], "little")
            fields[head.decode()] = rest[8 : 8 + size].decode()
            rest = rest[8 + size + 1 :]
    return fields


def test_journal_handler_sends_device_line_and_event_fields():
    import logging

    from agent.runtime.logging import ContextFilter, JournalHandler

    with tempfile.TemporaryDirectory(prefix="journal-", dir="/tmp") as folder:
        journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        journal.bind(os.path.join(folder, "socket"))
        journal.settimeout(2)
        handler = JournalHandler(Path(folder) / "socket")
        handler.addFilter(ContextFilter("box-1", ["inspect"]))
        logger = logging.getLogger("test.journal")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            def stage():
                logger.warning("inspection %d is a no read", 7, extra={"event_id": "ev-7"})
                try:
                    raise ValueError("bad\nframe")
                except ValueError:
                    logger.exception("delivery failed")

            thread = threading.Thread(target=stage, name="inspect-inspect")  # a line's stage thread
            thread.start()
            thread.join()
            first = _parse_journal_datagram(journal.recv(65536))
            second = _parse_journal_datagram(journal.recv(65536))
        finally:
            logger.removeHandler(handler)
            handler.close()
            journal.close()
    assert first["MESSAGE"] == "inspection 7 is a no read"
    assert (first["PRIORITY"], first["DEVICE_ID"], first["LINE"], first["EVENT_ID"]) == ("4", "box-1", "inspect", "ev-7")
    assert first["SYSLOG_IDENTIFIER"] == "edge-agent" and first["LOGGER"] == "test.journal"
    assert second["PRIORITY"] == "3" and "EVENT_ID" not in second
    assert second["MESSAGE"].startswith("delivery failed\nTraceback") and "bad\nframe" in second["MESSAGE"]


def test_json_lines_and_auto_format(tmp_path):
    import io
    import logging

    from agent.runtime import logging as structured_logs

    stream = io.StringIO()
    chosen = structured_logs.configure("INFO", device_id="box-2", lines=["inspect"], fmt="auto", stream=stream,
                                       environ={})
    try:
        logging.getLogger("agent.test").info("hello %s", "there", extra={"line": "inspect", "event_id": "ev-1"})
        logging.getLogger("agent.test").debug("not at INFO")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_edge_agent", False)]:
            root.removeHandler(handler)
    assert chosen == "json"  # not a terminal, not the journal
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {k: record[k] for k in ("level", "logger", "msg", "device_id", "line", "event_id")} == {
        "level": "INFO", "logger": "agent.test", "msg": "hello there", "device_id": "box-2", "line": "inspect",
        "event_id": "ev-1"}
    assert record["ts"].endswith("Z")
