"""The offline install bundle: its layout (quick), and (slow) a full wheelhouse that installs into a
fresh venv with `pip --no-index` and passes `edge-agent doctor` against the simulator."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.plc import SimPlc
from tiny_ir import save_tiny_detector

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "provisioning" / "build_bundle.py"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = platform.machine()


def _build(out: Path, models: Path, wheels: str) -> Path:
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(out), "--models", str(models), "--wheels", wheels],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    (bundle,) = out.glob("edge-agent-bundle-*")
    return bundle


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "inspection-detector"
    save_tiny_detector(folder / "int8")
    (folder / "CARD.md").write_text("# a tiny test detector\n")
    return folder


@pytest.fixture(scope="module")
def layout_bundle(tmp_path_factory, models) -> Path:
    return _build(tmp_path_factory.mktemp("dist"), models, wheels="project")


def test_bundle_layout(layout_bundle, models):
    bundle = layout_bundle
    assert bundle.name == f"edge-agent-bundle-0.1.0-py{PYTHON_VERSION.replace('.', '')}-{ARCH}"
    assert os.access(bundle / "install.sh", os.X_OK)
    env = dict(line.split("=", 1) for line in (bundle / "bundle.env").read_text().splitlines())
    assert env == {"EDGE_AGENT_VERSION": "0.1.0", "PYTHON_VERSION": PYTHON_VERSION, "ARCH": ARCH, "GLIBC": "2.31"}
    assert (bundle / "systemd/edge-agent.service").read_bytes() == (REPO / "systemd/edge-agent.service").read_bytes()
    for name in ("fleet.template.yaml", "device.example.yaml", "cloud-init.user-data.yaml"):
        assert (bundle / "provisioning" / name).read_bytes() == (REPO / "provisioning" / name).read_bytes()
    shipped = sorted(p.relative_to(bundle / "models").as_posix() for p in (bundle / "models").rglob("*") if p.is_file())
    assert shipped == sorted(f"inspection-detector/{p.relative_to(models).as_posix()}"
                             for p in models.rglob("*") if p.is_file())
    (wheel,) = (bundle / "wheels").glob("*.whl")
    assert wheel.name == "edge_agent-0.1.0-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"agent/doctor.py", "agent/provision.py", "agent/runtime/sdnotify.py", "agent/runtime/watchdog.py"} <= names
    check = _run("sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS", cwd=bundle)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}


def test_install_refuses_a_damaged_bundle(layout_bundle, tmp_path):
    copy = tmp_path / layout_bundle.name
    _run("cp", "-a", layout_bundle, copy).check_returncode()
    with (copy / "systemd/edge-agent.service").open("a") as unit:
        unit.write("# changed on the stick\n")
    result = _run(copy / "install.sh", "--prefix", tmp_path / "opt", "--no-provision", timeout=60)
    assert result.returncode == 1
    assert "the bundle is damaged" in result.stderr
    assert not (tmp_path / "opt").exists()


def test_install_refuses_another_python(layout_bundle, tmp_path):
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\necho 3.9\n")
    python.chmod(0o755)
    result = _run(layout_bundle / "install.sh", "--python", python, "--prefix", tmp_path / "opt", "--no-provision",
                  timeout=60)
    assert result.returncode == 1
    assert f"this bundle's wheels are for Python {PYTHON_VERSION}, {python} is 3.9" in result.stderr


def test_install_refuses_to_provision_outside_the_units_prefix(layout_bundle, tmp_path):
    result = _run(layout_bundle / "install.sh", "--prefix", tmp_path / "opt", timeout=60)
    assert result.returncode == 1
    assert "provisioning needs --prefix /opt/edge-agent" in result.stderr


@pytest.mark.slow
def test_offline_bundle_installs_without_an_index_and_passes_doctor(tmp_path, models, broker):
    bundle = _build(tmp_path / "dist", models, wheels="all")
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {"edge_agent", "openvino", "numpy", "opencv_python_headless", "pydantic", "cryptography"} <= wheels

    prefix = tmp_path / "opt"
    base_python = getattr(sys, "_base_executable", sys.executable)
    # No index at all: PIP_* settings of this machine must not leak into the install.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    installed = _run(bundle / "install.sh", "--prefix", prefix, "--python", base_python, "--no-provision",
                     env=env, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    edge_agent = prefix / "venv" / "bin" / "edge-agent"
    freeze = _run(prefix / "venv" / "bin" / "python", "-m", "pip", "list", "--format=freeze", env=env)
    assert "edge-agent==0.1.0" in freeze.stdout

    root = tmp_path / "root"
    root.mkdir()
    with SimPlc() as plc, SimCamera() as camera:
        camera.show(encode_jpeg(np.full((120, 160, 3), 100, np.uint8)))
        provisioned = _run(edge_agent, "provision", "--root", root, "--template", bundle / "provisioning/fleet.template.yaml",
                           "--unit", bundle / "systemd/edge-agent.service", "--models-dir", prefix / "models",
                           "--device-id", "usb-box-1", "--broker-url", f"mqtt://{broker.host}:{broker.port}",
                           "--plc", f"127.0.0.1:{plc.port}", "--camera", f"cam0={camera.url}", timeout=120)
        assert provisioned.returncode == 0, provisioned.stderr
        doctor = _run(edge_agent, "doctor", "--config", root / "etc/edge-agent/config.yaml", "--state-dir", tmp_path,
                      "--min-free-mb", "1", timeout=120,
                      env=os.environ | {"GPIOZERO_PIN_FACTORY": "mock"})  # no GPIO here: gpiozero's mock pins
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "0 failed" in doctor.stdout.splitlines()[-1]
