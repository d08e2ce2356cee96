"""The classifier's crop policy: pure geometry, metadata parsing, and the cascade on real IRs
(the shipped models run by OpenVINO; a copied IR folder with an edited metadata.yaml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.events import Detection
from agent.infer.cascade import Cascade, crop_policy
from agent.infer.engine import Classifier, ModelLoadError
from agent.infer.geometry import CropPolicy, crop_box

REPO_ROOT = Path(__file__).resolve().parents[1]
SEVERITY = REPO_ROOT / "models" / "inspection-severity" / "int8"
VEHICLES = REPO_ROOT / "models" / "vehicle-types" / "int8"


def _frame(h=480, w=640):
    return np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("box", [(300, 200, 310, 212), (0, 0, 5, 5), (630, 470, 640, 480), (-20, 100, 700, 140),
                                 (100.4, 50.6, 180.2, 70.9)])
def test_context_window_is_fixed_size_inside_the_frame(box):
    policy = CropPolicy("context", size=96)
    x1, y1, x2, y2 = policy.window(box, 640, 480)
    assert (x2 - x1, y2 - y1) == (96, 96)
    assert 0 <= x1 and x2 <= 640 and 0 <= y1 and y2 <= 480
    crop = policy.cut(_frame(), box)
    assert crop.shape == (96, 96, 3)


def test_context_window_is_centred_on_the_box_away_from_the_edges():
    x1, y1, x2, y2 = CropPolicy("context", size=96).window((300, 200, 340, 220), 640, 480)
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == (320, 210)


def test_context_window_keeps_pixels_one_to_one():
    frame = _frame()
    crop = CropPolicy("context", size=64).cut(frame, (100, 100, 110, 110))
    np.testing.assert_array_equal(crop, frame[73:137, 73:137])


def test_context_crop_is_padded_only_where_the_frame_is_smaller():
    frame = _frame(60, 200)
    crop = CropPolicy("context", size=96).cut(frame, (50, 20, 60, 30))
    assert crop.shape == (96, 96, 3)
    assert (crop[:18] == 114).all() and (crop[78:] == 114).all()  # 36 rows of padding, split
    np.testing.assert_array_equal(crop[18:78], frame[:, 7:103])
    grey = CropPolicy("context", size=96).cut(frame[:, :, 0], (50, 20, 60, 30))
    assert grey.shape == (96, 96)


def test_box_policy_is_the_old_crop():
    rng = np.random.default_rng(0)
    policy = CropPolicy("box", margin=4, min_size=16)
    for _ in range(200):
        x1, y1 = rng.uniform(-50, 650, 2)
        box = (x1, y1, x1 + rng.uniform(0, 200), y1 + rng.uniform(0, 200))
        assert policy.window(box, 640, 480) == crop_box(box, 640, 480, 4, 16)


def test_metadata_parsing():
    default = CropPolicy("box", margin=8, min_size=32)
    assert CropPolicy.from_metadata({}, default) is default
    assert CropPolicy.from_metadata({}) == CropPolicy()
    assert CropPolicy.from_metadata({"crop": {"mode": "context", "size": 128}}) == CropPolicy("context", size=128)
    assert CropPolicy.from_metadata({"crop": {"margin": 2}}) == CropPolicy("box", margin=2)
    for policy in (CropPolicy("context", size=96), CropPolicy("box", margin=3, min_size=20)):
        assert CropPolicy.from_metadata({"crop": policy.as_metadata()}) == policy


@pytest.mark.parametrize("crop, message", [
    ("context", "must be a mapping"),
    ({"mode": "zoom"}, "crop mode must be one of box, context"),
    ({"mode": "context"}, "needs size"),
    ({"mode": "context", "size": 96.5}, "size must be an integer"),
    ({"mode": "context", "size": True}, "size must be an integer"),
    ({"mode": "box", "margin": -1}, "margin must be 0..512"),
    ({"mode": "box", "pad": 3}, "unknown keys ['pad']"),
])
def test_bad_metadata_is_a_clear_error(crop, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        CropPolicy.from_metadata({"crop": crop})


def _copy_ir(src: Path, dst: Path, crop) -> Path:
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / "metadata.yaml").read_text())
    if crop is None:
        meta.pop("crop", None)
    else:
        meta["crop"] = crop
    (dst / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return dst


def test_cascade_cuts_as_the_model_says(tmp_path):
    """A classifier whose metadata asks for a context crop gets exactly that window, 1:1."""
    folder = _copy_ir(VEHICLES, tmp_path / "ctx", {"mode": "context", "size": 64})
    classifier = Classifier(folder)
    cascade = Cascade(classifier)
    assert cascade.crop == CropPolicy("context", size=64)
    frame = _frame()
    det = Detection(1, "vehicle", 0.9, (200.0, 150.0, 230.0, 170.0))
    [out] = cascade.classify(frame, [det])
    expected = classifier.classify([frame[128:192, 183:247]], k=1)[0][0]
    assert out.classification == expected
    assert out.box == det.box and out.label == det.label


def test_cascade_without_crop_metadata_uses_its_box_defaults(tmp_path):
    folder = _copy_ir(VEHICLES, tmp_path / "plain", None)
    assert Cascade(Classifier(folder)).crop == CropPolicy("box", margin=4, min_size=16)
    assert Cascade(Classifier(folder), margin_px=10, min_size_px=40).crop == CropPolicy("box", margin=10, min_size=40)


def test_cascade_refuses_a_malformed_crop_naming_the_file(tmp_path):
    folder = _copy_ir(VEHICLES, tmp_path / "bad", {"mode": "context"})
    classifier = Classifier(folder)
    with pytest.raises(ModelLoadError, match=r"bad/metadata\.yaml: crop mode context needs size"):
        Cascade(classifier)


def test_shipped_severity_model_declares_its_crop():
    """The severity classifier was trained on fixed-scale windows: its metadata says so, and the
    cascade follows it whatever defaults it was given."""
    classifier = Classifier(SEVERITY)
    policy = crop_policy(classifier.info)
    assert policy.mode == "context" and policy.size == classifier.info.input_size[0]
    assert Cascade(classifier, margin_px=8, min_size_px=32).crop == policy


def test_agent_with_a_malformed_crop_exits_2_before_the_line_starts(tmp_path):
    """The daemon builds its cascades with the models, before any link: one line naming the file."""
    import subprocess
    import sys

    from hw_sim.camera import SimCamera
    from hw_sim.harness import DEFAULT_MODEL, LINE, agent_config

    class Down:  # nothing listens here: the run must fail on the model first
        host, port = "127.0.0.1", 9

    folder = _copy_ir(SEVERITY, tmp_path / "severity", {"mode": "context", "size": "big"})
    config = agent_config(Down, Down, SimCamera(), DEFAULT_MODEL, 0.4, outbox=tmp_path / "outbox.db")
    config["models"]["severity"] = {"path": str(folder), "device": "CPU"}
    config["lines"][LINE]["severity_model"] = "severity"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{folder / 'metadata.yaml'}: crop size must be an integer" in proc.stderr
    assert "Traceback" not in proc.stderr
