"""Provisioning for sync: the bundle-signing key is installed and the config's sync section rendered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from agent.config import load_config
from agent.control.auth import generate_keypair

REPO = Path(__file__).resolve().parents[1]


def provision(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "provision", "--root", str(root), "--template",
         str(REPO / "provisioning" / "fleet.template.yaml"), "--device-id", "box1", "--broker-url",
         "mqtt://127.0.0.1:1883", "--plc", "127.0.0.1", "--camera", "cam0=http://127.0.0.1/x.jpg", *extra],
        capture_output=True, text=True, timeout=120)


def test_provision_installs_the_bundle_key_and_renders_sync(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _, public = generate_keypair(tmp_path / "fleet-bundles.pem")
    first = provision(root)
    assert first.returncode == 0, first.stderr
    assert yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())["sync"] is None
    url = "https://updates.example.com/fleet/line1/manifest.json"
    second = provision(root, "--bundle-key", str(public), "--sync-url", url, "--sync-window", "01:30-03:00")
    assert second.returncode == 0, second.stderr
    sync = yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())["sync"]
    assert sync == {"manifest_url": url, "public_keys": ["/etc/edge-agent/bundle-keys/fleet-bundles.pem.pub"],
                    "window": "01:30-03:00", "state_dir": "/var/lib/edge-agent/bundles"}
    assert (root / "etc/edge-agent/bundle-keys/fleet-bundles.pem.pub").read_bytes() == public.read_bytes()
    config = load_config(root / "etc/edge-agent/config.yaml")
    assert config.sync.window == "01:30-03:00" and config.sync.trial.duration_s == 600
    again = provision(root, "--bundle-key", str(public), "--sync-url", url, "--sync-window", "01:30-03:00")
    assert "0 change(s)" in again.stdout


def test_provision_sync_user_errors_are_one_line(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _, public = generate_keypair(tmp_path / "k.pem")
    (tmp_path / "bad.pub").write_text("nope")
    for extra, message in (
        (["--sync-url", "https://u.example.com/m.json"], "needs the fleet's bundle-signing public key"),
        (["--sync-url", "http://u.example.com/m.json", "--bundle-key", str(public)], "expected https://"),
        (["--bundle-key", str(tmp_path / "bad.pub")], "--bundle-key"),
        (["--sync-url", "https://u.example.com/m.json", "--bundle-key", str(public), "--sync-window", "2-4"],
         "expected HH:MM-HH:MM"),
    ):
        result = provision(root, *extra)
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr
