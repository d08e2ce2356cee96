"""A surveillance box: `edge-agent run` with a `type: stream` line and no PLC, two cameras (an
MPEG-TS stream served by Debian's ffmpeg and an image folder), the shipped surveillance models,
a real mosquitto. Events and alerts arrive on the broker and match their schemas."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import yaml

from hw_sim.street_scene import StreetRenderer
from hw_sim.streams import StreamServer
from hw_sim.subscriber import MqttRecorder

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = REPO_ROOT / "agent" / "deliver" / "schemas"
MODELS = REPO_ROOT / "models"
SEED = 19700  # not a build seed


def _config(tmp_path: Path, broker, stream_url: str, folder: Path) -> Path:
    config = {
        "device": {"id": "street-box1"},
        "log_level": "WARNING",
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "edge"},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "models": {"people": {"path": str(MODELS / "surveillance-detector" / "int8")},
                   "vehicles": {"path": str(MODELS / "vehicle-types" / "int8")}},
        "cameras": {"gate": {"type": "stream", "url": stream_url, "open_timeout_ms": 3000, "read_timeout_ms": 3000},
                    "yard": {"type": "folder", "path": str(folder), "fps": 5}},
        "lines": {"street": {
            "type": "stream", "cameras": ["gate", "yard"], "model": "people",
            "classifier": "vehicles", "classify_labels": ["vehicle"],
            "max_fps": 5, "motion": None, "event_interval_s": 0.5,
            # A zone over the whole picture of the stream (a still street: its objects stay put, so
            # they are tracked and enter it; the folder shows a new street every frame).
            "analytics": {"cameras": {"gate": {"zones": [
                {"name": "all", "polygon": [[0, 0], [640, 0], [640, 480], [0, 480]]}]}}},
        }},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_stream_line_without_a_plc_reports_detections_and_alerts(tmp_path, broker):
    renderer = StreetRenderer(seed=SEED)
    scenes = [renderer.render() for _ in range(3)]
    folder = tmp_path / "yard"
    folder.mkdir()
    for i, scene in enumerate(scenes):
        cv2.imwrite(str(folder / f"{i}.png"), scene.image)
    with StreamServer(image=scenes[0].image, fps=10, workdir=tmp_path / "stream") as server, \
            MqttRecorder(broker.host, broker.port, "edge/street-box1/events/#") as events:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                 str(_config(tmp_path, broker, server.url, folder))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def enough(messages):
                bodies = [m.json() for m in messages]
                cameras = {b["camera"] for b in bodies if b.get("kind") == "detections"}
                return cameras == {"gate", "yard"} and any(b.get("kind") == "zone_enter" for b in bodies)
            received = events.wait_for(enough, timeout=90)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    detections_schema = json.loads((SCHEMAS / "detections.json").read_text())
    alert_schema = json.loads((SCHEMAS / "alert.json").read_text())
    bodies = [m.json() for m in received]
    for body in bodies:
        jsonschema.validate(body, detections_schema if body["kind"] == "detections" else alert_schema)
    labels = {d["label"] for b in bodies if b["kind"] == "detections" for d in b["detections"]}
    assert labels <= {"person", "vehicle"} and labels
    classes = {d.get("class") for b in bodies if b["kind"] == "detections" for d in b["detections"]
               if d["label"] == "vehicle"}
    assert classes and classes <= {"car", "van", "truck", "bus"}  # vehicles went through the classifier
    assert all("class" not in d for b in bodies if b["kind"] == "detections" for d in b["detections"]
               if d["label"] == "person")
