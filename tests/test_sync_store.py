"""The bundle store: signed manifests, slots, the atomic switch, and recovery after a crash at
every file-system step (each rename, symlink switch, state write and removal in turn)."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import catalog
from agent.sync import store as store_module
from agent.sync.files import sha256_file
from agent.sync.manifest import Artefact, CatalogEntry, Manifest, ManifestError, iso_time, sign, verify
from agent.sync.store import BundleStore, StoreError, load_slot
from models.make_bundle import simulator_products

KEY = Ed25519PrivateKey.generate()
KEYS = [KEY.public_key()]


def make_bundle(folder, version: int, expires_in_s: float = 3600, key=KEY):
    """A small real bundle (a product database and a blob) in folder/VERSION: (envelope, manifest)."""
    bundle = folder / str(version)
    bundle.mkdir(parents=True, exist_ok=True)
    catalog.build(bundle / "catalog.db", simulator_products(), version=str(version))
    (bundle / "data").mkdir(exist_ok=True)
    (bundle / "data" / "blob.bin").write_bytes(os.urandom(2048) + str(version).encode())
    artefacts = {p.relative_to(bundle).as_posix(): Artefact(sha256=sha256_file(p), size=p.stat().st_size,
                                                             url=f"{version}/{p.relative_to(bundle).as_posix()}")
                 for p in sorted(bundle.rglob("*")) if p.is_file()}
    manifest = Manifest(version=version, created_at=iso_time(time.time()), expires_at=iso_time(time.time() + expires_in_s),
                        artefacts=artefacts, catalog=CatalogEntry(path="catalog.db", version=str(version)))
    return sign(manifest, [key]), manifest


def install(store: BundleStore, folder, version: int, trial=None):
    envelope, manifest = make_bundle(folder, version)
    staging = store.begin(envelope, manifest)
    for path in manifest.artefacts:
        shutil.copy(folder / str(version) / path, staging.file(path))
    slot = store.commit(staging)
    store.activate(slot, trial)
    return slot


def reopen(root) -> BundleStore:
    store = BundleStore(root, KEYS)
    store.recover()
    return store


def test_signature_covers_every_byte_and_only_trusted_keys_count(tmp_path):
    envelope, manifest = make_bundle(tmp_path, 3)
    assert verify(envelope, KEYS) == manifest
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ManifestError) as refused:
        verify(envelope, [other.public_key()])
    assert refused.value.code == "bad_signature"
    tampered = envelope.replace(b'"payload": "', b'"payload": "A', 1)
    with pytest.raises(ManifestError) as refused:
        verify(tampered, KEYS)
    assert refused.value.code in ("bad_signature", "bad_manifest")
    for garbage in (b"", b"[]", b'{"payloadType": "x"}', b"\xff\xfe"):
        with pytest.raises(ManifestError) as refused:
            verify(garbage, KEYS)
        assert refused.value.code == "bad_manifest"


def test_manifest_paths_must_stay_inside_the_slot():
    good = Artefact(sha256="0" * 64, size=1, url="1/x")
    for path in ("../etc/passwd", "/abs", "a/../../b", ".hidden", "a//b"):
        with pytest.raises(ValueError):
            Manifest(version=1, created_at="2026-01-01T00:00:00Z", expires_at="2026-02-01T00:00:00Z",
                     artefacts={path: good}, catalog=CatalogEntry(path=path, version="1"))
    with pytest.raises(ValueError, match="time zone"):
        Manifest(version=1, created_at="2026-01-01T00:00:00", expires_at="2026-02-01T00:00:00Z",
                 artefacts={"x": good}, catalog=CatalogEntry(path="x", version="1"))


def test_activate_keeps_previous_for_rollback_and_anti_rollback_survives_a_lost_state(tmp_path):
    root, cloud = tmp_path / "store", tmp_path / "cloud"
    store = reopen(root)
    assert store.active is None and store.highest == 0
    install(store, cloud, 1)
    install(store, cloud, 2)
    install(store, cloud, 3)
    assert (store.active.version, store.previous.version, store.highest) == (3, 2, 3)
    assert sorted(os.listdir(root / "slots")) == ["2", "3"]  # older slots pruned
    assert os.readlink(root / "active") == "slots/3"
    left, now = store.revert("test")
    assert (left.version, now.version) == (3, 2) and store.failed == {"3": "test"}
    again = reopen(root)
    assert again.active.version == 2 and again.previous is None and again.highest == 3
    (root / "state.json").unlink()
    assert reopen(root).highest == 2  # the slots on disk still set a floor


def test_a_damaged_active_slot_falls_back_to_previous_then_factory(tmp_path):
    root, cloud = tmp_path / "store", tmp_path / "cloud"
    store = reopen(root)
    install(store, cloud, 1)
    install(store, cloud, 2)
    blob = root / "slots" / "2" / "data" / "blob.bin"
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")
    store = reopen(root)
    assert store.active.version == 1 and "2" in store.failed
    assert any("damaged" in note for note in store.recovery_notes)
    (root / "slots" / "1" / "catalog.db").unlink()
    store = reopen(root)
    assert store.active is None and not (root / "active").exists()


def test_half_written_staging_is_removed_at_start(tmp_path):
    root = tmp_path / "store"
    store = reopen(root)
    envelope, manifest = make_bundle(tmp_path / "cloud", 5)
    staging = store.begin(envelope, manifest)
    staging.file("catalog.db").write_bytes(b"half")
    store = reopen(root)
    assert list((root / "staging").iterdir()) == [] and store.active is None
    assert any("staging" in note for note in store.recovery_notes)


class _Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even except/finally of the store)."""


def _crash_at(monkeypatch, step: int) -> list[str]:
    """Make the step-th file-system mutation of the store raise _Crash; returns the ops seen."""
    seen: list[str] = []

    def wrap(name, real):
        def op(*args, **kwargs):
            seen.append(name)
            if len(seen) == step:
                raise _Crash(name)
            return real(*args, **kwargs)
        return op

    monkeypatch.setattr(store_module, "atomic_write", wrap("write state", store_module.atomic_write))
    monkeypatch.setattr(store_module, "atomic_symlink", wrap("switch link", store_module.atomic_symlink))
    monkeypatch.setattr(store_module.shutil, "rmtree", wrap("remove tree", shutil.rmtree))
    monkeypatch.setattr(store_module.os, "rename", wrap("rename", os.rename))
    monkeypatch.setattr(store_module.os, "unlink", wrap("unlink", os.unlink))
    return seen


@pytest.mark.parametrize("action", ["update", "revert"])
def test_a_crash_at_any_step_leaves_a_complete_old_or_new_bundle(tmp_path, monkeypatch, action):
    step, outcomes = 1, set()
    while True:
        root, cloud = tmp_path / f"{action}-{step}" / "store", tmp_path / f"{action}-{step}" / "cloud"
        store = reopen(root)
        install(store, cloud, 1)
        install(store, cloud, 2)
        envelope, manifest = make_bundle(cloud, 3)
        with monkeypatch.context() as patch:
            seen = _crash_at(patch, step)
            try:
                if action == "update":
                    staging = store.begin(envelope, manifest)
                    for path in manifest.artefacts:
                        shutil.copy(cloud / "3" / path, staging.file(path))
                    store.activate(store.commit(staging), {"version": 3, "until": time.time() + 60})
                else:
                    store.revert("trial failed")
                crashed = False
            except _Crash:
                crashed = True
        after = reopen(root)
        expected = {2, 3} if action == "update" else {1, 2}
        active = after.active
        assert active is not None and active.version in expected, (step, seen)
        load_slot(active.path, KEYS)  # complete: every file matches the signed manifest
        assert after.highest >= 2
        assert not list((root / "staging").iterdir())
        if action == "revert" and active.version == 1:
            assert "2" in after.failed  # a version left by a revert is not installed again
        if after.previous is not None:
            assert after.previous.version < active.version
        outcomes.add(active.version)
        if not crashed:
            break
        step += 1
    assert outcomes == expected, f"a crash at one of the {step} steps should leave each of {expected}"
    assert step >= 4
    print(f"\n{action}: a crash at each of {step - 1} steps, then none; active afterwards: {sorted(outcomes)}")
