"""`restart` and a restart-needing `config/set` against `edge-agent run` as a process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.deliver.mqtt import MqttRequester
from hw_sim.camera import SimCamera
from hw_sim.harness import DEFAULT_MODEL, DEVICE_ID, agent_config
from hw_sim.plc import SimPlc
from hw_sim.subscriber import MqttRecorder

pytestmark = pytest.mark.timeout(180)
BASE = f"edge/{DEVICE_ID}"


def test_restart_and_config_set_rebuild_the_running_daemon(tmp_path, broker):
    config_path = tmp_path / "agent.yaml"
    with SimPlc() as plc, SimCamera() as camera, \
            MqttRecorder(broker.host, broker.port, f"{BASE}/status") as status:
        config = agent_config(broker, plc, camera, DEFAULT_MODEL, 0.4, outbox=tmp_path / "outbox.db")
        config["log_level"] = "INFO"
        config_path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def onlines(count):
                status.wait_for(lambda ms: sum(m.json().get("state") == "online" for m in ms) >= count, timeout=60)

            onlines(1)
            with MqttRequester(broker.host, broker.port, reply_topic=f"{BASE}/replies/t") as req:
                def send(name, args):
                    raw = req.request(f"{BASE}/cmd/{name}", json.dumps({"args": args}).encode(), timeout_s=15)
                    assert raw is not None, f"no reply to {name}"
                    return json.loads(raw)

                reply = send("config/set", {"patch": {"plc": {"timeout_ms": 400}}})
                assert reply["code"] == "restart_scheduled" and reply["data"]["restart_needed"] == ["plc.timeout_ms"]
                onlines(2)  # rebuilt from the new file
                assert yaml.safe_load(config_path.read_text())["plc"]["timeout_ms"] == 400
                assert Path(str(config_path) + ".prev").is_file()

                assert send("restart", {"reason": "test"})["code"] == "restart_scheduled"
                onlines(3)  # the file is unchanged, and it rebuilds anyway
                assert send("ping", {})["ok"]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        sessions = [m.json()["session"] for m in status.messages() if m.json().get("state") == "online"]
        assert len(set(sessions)) == 3, sessions
