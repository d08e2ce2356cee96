"""`edge-agent run` as a process: user errors exit 2 with a message, SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hw_sim.camera import SimCamera
from hw_sim.harness import DEFAULT_MODEL, agent_config
from hw_sim.plc import SimPlc
from hw_sim.subscriber import MqttRecorder


def _run(config_path: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def _config(tmp_path: Path, broker, plc, camera, model: Path = DEFAULT_MODEL) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(agent_config(broker, plc, camera, model, 0.4, outbox=tmp_path / "outbox.db")))
    return path


class _Down:
    """Addresses where nothing listens: the process must fail on the model before any link."""

    host, port = "127.0.0.1", 9


def test_missing_model_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = _run(_config(tmp_path, _Down, _Down, SimCamera(), missing))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert str(missing) in err and "Traceback" not in err


def test_truncated_model_exits_2_naming_the_file(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    xml = (DEFAULT_MODEL / "inspection-detector.xml").read_text()
    (broken / "inspection-detector.xml").write_text(xml[: len(xml) // 2])
    (broken / "inspection-detector.bin").write_bytes(b"\0" * 16)
    proc = _run(_config(tmp_path, _Down, _Down, SimCamera(), broken))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert str(broken / "inspection-detector.xml") in err and "Traceback" not in err


def test_sigterm_stops_within_5_s(tmp_path, broker):
    with SimPlc() as plc, SimCamera() as camera, MqttRecorder(broker.host, broker.port, "edge/+/status") as status:
        proc = _run(_config(tmp_path, broker, plc, camera))
        try:
            status.wait_for(lambda msgs: any(m.json().get("state") == "online" for m in msgs), timeout=60)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err
        assert elapsed < 5.0
        assert "Traceback" not in err
        status.wait_for(lambda msgs: bool(msgs) and msgs[-1].json().get("state") == "stopped", timeout=5)


def test_demo_takes_its_own_options():
    result = subprocess.run([sys.executable, "-m", "agent", "demo", "--parts", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--parts must be >= 1" in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "agent", "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--parts" in help_text.stdout
