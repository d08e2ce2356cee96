"""`edge-agent demo --use-case surveillance`: a street camera on the simulator, with a scorecard.

A rendered street clip (hw_sim.street_tracks: persons, vehicles and a loiterer, with the truth
of every track) is served once, in real time, as a live MPEG-TS stream by Debian's ffmpeg.
`edge-agent run` reads it with a `type: stream` line: the shipped INT8 surveillance detector,
the vehicle-types classifier, tracking, two tripwires, a zone and a loitering zone, publishing to
a real mosquitto. The scorecard compares the alerts that arrive over MQTT with the clip's truth,
as hw_sim.analytics_eval does offline: an alert matches a true event of the same class and kind
within a tolerance (1 s for crossings, 1.5 s for zones).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import yaml

from . import street_tracks as st
from .agent_process import AgentProcess
from .analytics_eval import FPS, LOITER_S, TRIPWIRES, ZONE, Tally
from .broker import MosquittoBroker
from .streams import StreamServer
from .subscriber import MqttRecorder

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = REPO_ROOT / "models"
HELD_OUT_SEED = 47000  # not a build or test seed
DEVICE = "street-demo"
CAMERA = "street"
TOPIC = f"edge/{DEVICE}/events/{CAMERA}"


@dataclass
class StreetScorecard:
    seconds: float
    frames: int
    tallies: list[Tally]
    loiterers: int
    loiterers_flagged: int
    loitering_wrong: int
    frames_seen: int = 0  # distinct frames the detections events came from
    vehicles_classified: int = 0
    vehicles_reported: int = 0
    infer_ms: list[float] = field(default_factory=list)
    exit_code: int | None = None

    def render(self) -> str:
        lines = [f"  clip                       {self.seconds:g} s at {FPS:g} fps ({self.frames} frames), "
                 f"served live by ffmpeg"]
        for tally in self.tallies:
            lines.append(f"  {tally.what:<26} {tally.truth} true, {tally.found} alerts, {tally.matched} matched "
                         f"(recall {tally.recall:.2f}, precision {tally.precision:.2f})")
        lines.append(f"  loitering (> {LOITER_S:g} s)        {self.loiterers_flagged} of {self.loiterers} loiterers "
                     f"flagged, {self.loitering_wrong} alerts on anything else")
        lines.append(f"  vehicles classified        {self.vehicles_classified} of {self.vehicles_reported} reported "
                     f"vehicles carry a type (vehicle-types classifier)")
        if self.infer_ms:
            lines.append(f"  inference per frame        p50 {statistics.median(self.infer_ms):.1f} ms, "
                         f"max {max(self.infer_ms):.1f} ms (detections events' timings)")
        lines.append(f"  edge-agent exit status     {self.exit_code} (SIGTERM at the end)")
        return "\n".join(lines)


def _config(workdir: Path, broker: MosquittoBroker, url: str, loiter_zones: list) -> Path:
    config = {
        "device": {"id": DEVICE},
        "log_level": "WARNING",
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "edge"},
        "outbox": {"path": str(workdir / "outbox.db")},
        "models": {"people": {"path": str(MODELS / "surveillance-detector" / "int8")},
                   "vehicles": {"path": str(MODELS / "vehicle-types" / "int8")}},
        "cameras": {CAMERA: {"type": "stream", "url": url, "open_timeout_ms": 5000, "read_timeout_ms": 3000}},
        "lines": {CAMERA: {
            "type": "stream", "cameras": [CAMERA], "model": "people", "classifier": "vehicles",
            "classify_labels": ["vehicle"], "max_fps": FPS, "motion": None, "event_interval_s": 1,
            "analytics": {"cameras": {CAMERA: {
                "zones": [{"name": "centre", "polygon": [list(p) for p in ZONE]},
                          *({"name": name, "polygon": [list(p) for p in polygon], "classes": ["person"],
                             "events": [], "loiter_s": LOITER_S} for name, polygon in loiter_zones)],
                "tripwires": [{"name": name, "line": [list(a), list(b)]} for name, (a, b) in TRIPWIRES.items()],
            }}},
        }},
    }
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _clip_index(seq: int) -> int:
    """The clip frame that the camera's frame `seq` (from 1) showed."""
    return seq - 1


def _clip_time(bodies: list[dict]) -> dict[str, float]:
    """event_id -> its time in the clip. The camera's frame n (seq n, from 1) came (n - 1) / FPS
    after the clip began; the clip's start in Unix time is read off the events."""
    starts = [b["ts"] - (b["frame"]["seq"] - 1) / FPS for b in bodies if b.get("reason") != "lost"]
    start = statistics.median(starts) if starts else 0.0
    return {b["event_id"]: b["ts"] - start for b in bodies}


def score(scenes, bodies: list[dict], loiter_zones: list) -> StreetScorecard:
    seconds = len(scenes) / FPS
    bodies = [b for b in bodies if b["frame"]["seq"] <= len(scenes) + 3 * FPS]  # one play of the clip
    alerts = [b for b in bodies if b["kind"] != "detections"]
    when = _clip_time(alerts)
    tallies = []
    for name, (a, b) in TRIPWIRES.items():
        found = [(when[x["event_id"]], x["label"], x["direction"], tuple(x["box"])) for x in alerts
                 if x["kind"] == "line_cross" and x["tripwire"] == name]
        tally = Tally(f"tripwire '{name}'")
        tally.add(st.line_crossings(scenes, a, b), found, tolerance_s=1.0)
        tallies.append(tally)
    # The truth has every track still inside at the end exit there; the agent's tracks just stop
    # being seen, so exits in the clip's last second are left out on both sides.
    end = seconds - 1.0
    found = [(when[x["event_id"]], x["label"], x["kind"].removeprefix("zone_"), tuple(x["box"])) for x in alerts
             if x["kind"] in ("zone_enter", "zone_exit") and x["zone"] == "centre"
             and (x["kind"] == "zone_enter" or when[x["event_id"]] < end)]
    tally = Tally("zone 'centre' enter/exit")
    tally.add([e for e in st.zone_events(scenes, ZONE) if e.what == "enter" or e.t < end], found, tolerance_s=1.5)
    tallies.append(tally)
    flagged, wrong = 0, 0
    for name, _ in loiter_zones:
        tid = int(name.removeprefix("spot"))
        owners = [st.owner(scenes[min(_clip_index(x["frame"]["seq"]), len(scenes) - 1)], x["label"], x["box"])
                  for x in alerts if x["kind"] == "loitering" and x["zone"] == name]
        flagged += tid in owners
        wrong += sum(1 for o in owners if o != tid)
    detections = [b for b in bodies if b["kind"] == "detections"]
    vehicles = [d for b in detections for d in b["detections"] if d["label"] == "vehicle"]
    return StreetScorecard(
        seconds=seconds, frames=len(scenes), tallies=tallies, loiterers=len(loiter_zones),
        loiterers_flagged=flagged, loitering_wrong=wrong,
        frames_seen=len({b["frame"]["seq"] for b in detections}),
        vehicles_classified=sum(1 for d in vehicles if d.get("class")), vehicles_reported=len(vehicles),
        infer_ms=[b["timings_ms"]["infer"] for b in detections if "infer" in b.get("timings_ms", {})])


def run(seconds: float = 60.0, seed: int = HELD_OUT_SEED, out=None, progress=None) -> StreetScorecard:
    """Render, serve and run the clip through `edge-agent run`; the scorecard of what arrived."""
    scenes = st.clip(seed, seconds, FPS, persons=4, vehicles=3, loiterers=1)
    loiter_zones = [(f"spot{tid}", st.hangout(scenes, tid)) for tid in sorted(st.loiterers(scenes))]
    with tempfile.TemporaryDirectory(prefix="street-demo-") as tmp:
        workdir = Path(tmp)
        (workdir / "clip").mkdir()
        for i, scene in enumerate(scenes, start=1):
            cv2.imwrite(str(workdir / "clip" / f"{i:05d}.png"), scene.image)
        with MosquittoBroker(workdir=workdir / "broker") as broker, \
                StreamServer(frames=workdir / "clip", fps=FPS, workdir=workdir / "stream") as server, \
                MqttRecorder(broker.host, broker.port, TOPIC) as events:
            if out is not None:
                out.write(f"  simulator up: mosquitto :{broker.port}, street camera {server.url} "
                          f"({len(scenes)} frames, {len(loiter_zones)} loiterer); starting edge-agent run\n")
            agent = AgentProcess(workdir, _config(workdir, broker, server.url, loiter_zones))
            agent.start()
            try:
                deadline = time.monotonic() + seconds + 90
                last = 0
                while time.monotonic() < deadline and agent.running:
                    seen = max([last, *(m.json()["frame"]["seq"] for m in events.messages())])
                    if progress is not None and seen > last:
                        progress(min(_clip_index(seen) + 1, len(scenes)), len(scenes))
                    last = seen
                    if _clip_index(last) >= len(scenes) - FPS:  # played (its last second may be empty)
                        break
                    time.sleep(0.5)
                if progress is not None:
                    progress(len(scenes), len(scenes))
                server.stop()  # played once: ffmpeg would serve the clip again to the next connection
                time.sleep(3.0)  # the alerts of the last frames
                if not agent.running:
                    raise RuntimeError(f"edge-agent run exited early; its log:\n{agent.log_tail()}")
            finally:
                exit_code = agent.stop() if agent.running else agent.proc.returncode
            card = score(scenes, [m.json() for m in events.messages()], loiter_zones)
    card.exit_code = exit_code
    return card
