"""Signed bundles for the sync tests, made with models/make_bundle.py from the shipped models."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

from agent.control.auth import generate_keypair, load_private_key
from agent.sync.manifest import Manifest, sign
from models.make_bundle import build_bundle

REPO = Path(__file__).resolve().parents[1]
INT8 = REPO / "models" / "inspection-detector" / "int8"
FP32 = REPO / "models" / "inspection-detector" / "fp32"


def signing_key(folder: Path):
    """(private key, path of the public key) made in folder."""
    private, public = generate_keypair(folder / "bundle-signing.pem")
    return load_private_key(private), public


def make(cloud_root: Path, version: int, key, model: Path = INT8, **options) -> Path:
    """cloud_root/VERSION with the inspection detector as config model `defects`, and a catalog."""
    return build_bundle(cloud_root, version, key, {"defects": model}, golden_count=4, **options)


def resign(bundle: Path, key, change: Callable[[dict], None]) -> None:
    """Edit the manifest (a dict) and sign it again with key: a bundle the server vouches for whose
    content is what the change made it."""
    envelope = json.loads((bundle / "manifest.json").read_bytes())
    manifest = json.loads(base64.b64decode(envelope["payload"]))
    change(manifest)
    (bundle / "manifest.json").write_bytes(sign(Manifest.model_validate_json(json.dumps(manifest)), [key]))


def sync_section(cloud, public_key: Path, **extra) -> dict:
    """The agent config's `sync` section for a SimCloud."""
    return {"manifest_url": cloud.url, "public_keys": [str(public_key)], "ca_bundle": str(cloud.ca_file),
            "window": None, "retries": 1, **extra}
