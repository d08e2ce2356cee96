"""The bundle store on the device: A/B slots, an atomic switch, and recovery at start.

    ROOT/slots/<version>/    a complete bundle: its signed manifest.json and every artefact
    ROOT/staging/<version>/  a bundle being downloaded; never read by the agent
    ROOT/active   -> slots/<version>    what the agent runs (absent: the config's factory models)
    ROOT/previous -> slots/<version>    what it ran before, for a rollback (absent: factory)
    ROOT/state.json          highest version installed (anti-rollback), failed versions, the trial

Every step is crash-safe, with SIGKILL or a power cut at any point:

- a bundle is staged, each file fsynced, the manifest written last, the folders fsynced, and
  only then renamed into slots/: a slot that exists is complete;
- the switch is a symlink renamed over `active`, then the folder fsynced: `active` names the
  old slot or the new one, never anything in between;
- state.json is replaced atomically too, and written before each switch, so `recover()` can
  finish or undo a switch that a crash cut short.

`recover()` runs at every start: it removes staging folders, checks the active slot (the
signature of its manifest and the sha256 and size of every artefact) and falls back to the
previous slot, then to the factory models, when it is damaged; it completes a revert that was
cut short, and removes slots that are neither active nor previous.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .files import atomic_symlink, atomic_write, fsync_dir, fsync_file, sha256_file
from .manifest import Manifest, ManifestError, verify

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "state.json"
_FAILED_KEPT = 50


class StoreError(Exception):
    """The store cannot be used (permissions, a full disk); the message names the path."""


@dataclass(frozen=True)
class Slot:
    version: int
    path: Path
    manifest: Manifest

    def model_dir(self, name: str) -> Path | None:
        entry = self.manifest.models.get(name)
        return self.path / entry.dir if entry else None

    @property
    def catalog_path(self) -> Path | None:
        return self.path / self.manifest.catalog.path if self.manifest.catalog else None

    def summary(self) -> dict:
        return {"version": self.version, "label": self.manifest.label, "models": sorted(self.manifest.models),
                "catalog": self.manifest.catalog.version if self.manifest.catalog else None,
                "expires_at": self.manifest.expires_at}


class Staging:
    """A bundle being written: files go under `path`; `BundleStore.commit()` makes it a slot."""

    def __init__(self, path: Path, version: int, envelope: bytes, manifest: Manifest):
        self.path, self.version, self.envelope, self.manifest = path, version, envelope, manifest

    def file(self, slot_path: str) -> Path:
        target = self.path / slot_path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def load_slot(path: Path, keys: list[Ed25519PublicKey]) -> Slot:
    """A slot whose manifest verifies and whose artefacts all match it; else ManifestError."""
    try:
        envelope = (path / MANIFEST).read_bytes()
    except OSError as exc:
        raise ManifestError("incomplete", f"{path}: no readable {MANIFEST} ({exc.strerror or exc})") from None
    manifest = verify(envelope, keys)
    if str(manifest.version) != path.name:
        raise ManifestError("bad_manifest", f"{path}: holds the manifest of version {manifest.version}")
    for name, artefact in manifest.artefacts.items():
        file = path / name
        try:
            size = file.stat().st_size
        except OSError:
            raise ManifestError("incomplete", f"{path}: {name} is missing") from None
        if size != artefact.size or sha256_file(file) != artefact.sha256:
            raise ManifestError("bad_hash", f"{path}: {name} does not match its sha256 in the manifest")
    return Slot(manifest.version, path, manifest)


class BundleStore:
    def __init__(self, root: Path, keys: list[Ed25519PublicKey]):
        self.root = Path(root)
        self._keys = keys
        self.slots_dir = self.root / "slots"
        self.staging_dir = self.root / "staging"
        try:
            for folder in (self.root, self.slots_dir, self.staging_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"sync.state_dir {self.root}: cannot create: {exc.strerror or exc}") from None
        self.state: dict = {"highest": 0, "failed": {}, "trial": None}
        self._active: Slot | None = None
        self._previous: Slot | None = None
        self.recovery_notes: list[str] = []  # what recover() had to repair, for the sync report

    # -- reading -------------------------------------------------------------------------
    @property
    def active(self) -> Slot | None:
        return self._active

    @property
    def previous(self) -> Slot | None:
        return self._previous

    @property
    def highest(self) -> int:
        return int(self.state.get("highest") or 0)

    @property
    def failed(self) -> dict[str, str]:
        return self.state.setdefault("failed", {})

    @property
    def trial(self) -> dict | None:
        return self.state.get("trial")

    def _link_version(self, name: str) -> int | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        target = os.readlink(link)
        try:
            return int(Path(target).name)
        except ValueError:
            return None

    def _slot_versions(self) -> list[int]:
        return sorted(int(p.name) for p in self.slots_dir.iterdir() if p.is_dir() and p.name.isdigit())

    # -- start-up ------------------------------------------------------------------------
    def recover(self) -> None:
        """Bring the store to a consistent state after whatever stopped the last run."""
        self.recovery_notes = []
        for leftover in self.staging_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
            self._note(f"removed the half-written staging folder {leftover.name}")
        fsync_dir(self.staging_dir)
        self._load_state()
        slots = self._slot_versions()
        self.state["highest"] = max([self.highest, *slots])  # a lost state.json still knows the slots
        active, previous = self._link_version("active"), self._link_version("previous")
        if active is not None and str(active) in self.failed:
            self._note(f"completing the revert of version {active}, cut short by a restart")
            active = self._switch_back(active, previous)
            previous = None
        self._active = self._checked(active, "active")
        if active is not None and self._active is None:
            self.failed[str(active)] = "damaged on disk"
            self.state["trial"] = None
            self._save_state()
            previous_slot = self._checked(previous, "previous") if previous != active else None
            self._point("active", previous_slot.version if previous_slot else None)
            self._point("previous", None)
            self._active, previous = previous_slot, None
            self._note(f"version {active} is damaged; running "
                       f"{'version %d' % previous_slot.version if previous_slot else 'the factory models'}")
        if previous is not None and (self._active is None or previous == self._active.version
                                     or str(previous) in self.failed):
            older = [v for v in slots if self._active and v < self._active.version and str(v) not in self.failed]
            previous = older[-1] if older else None
            self._point("previous", previous)
        self._previous = self._checked(previous, "previous") if previous is not None else None
        if previous is not None and self._previous is None:
            self._point("previous", None)
        trial = self.trial
        if trial is not None and (self._active is None or trial.get("version") != self._active.version):
            self.state["trial"] = None  # the switch it was for never happened
        self._save_state()
        self._prune()

    def _checked(self, version: int | None, role: str) -> Slot | None:
        if version is None:
            return None
        try:
            return load_slot(self.slots_dir / str(version), self._keys)
        except ManifestError as exc:
            log.error("bundle store: the %s slot is not usable: %s", role, exc)
            self._note(f"{role} slot {version}: {exc}")
            return None

    def _note(self, text: str) -> None:
        log.warning("bundle store: %s", text)
        self.recovery_notes.append(text)

    def _load_state(self) -> None:
        path = self.root / STATE
        if not path.exists():
            return
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            self._note(f"{path} is unreadable ({exc}); the slots on disk set the highest version")
            return
        self.state.update(loaded)

    def _save_state(self) -> None:
        failed = self.failed
        if len(failed) > _FAILED_KEPT:
            for version in sorted(failed, key=int)[: len(failed) - _FAILED_KEPT]:
                del failed[version]
        try:
            atomic_write(self.root / STATE, json.dumps(self.state, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise StoreError(f"{self.root / STATE}: cannot write: {exc.strerror or exc}") from None

    def save(self) -> None:
        """Persist a change the caller made to `state` (the trial record)."""
        self._save_state()

    # -- staging -------------------------------------------------------------------------
    def begin(self, envelope: bytes, manifest: Manifest) -> Staging:
        path = self.staging_dir / str(manifest.version)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return Staging(path, manifest.version, envelope, manifest)

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(staging.path, ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def commit(self, staging: Staging) -> Slot:
        """Flush the staged bundle and rename it into slots/. Its artefacts must already match."""
        (staging.path / MANIFEST).write_bytes(staging.envelope)
        folders = {staging.path}
        for name in [*staging.manifest.artefacts, MANIFEST]:
            file = staging.path / name
            fsync_file(file)
            folders.update(p for p in file.parents if staging.path in p.parents or p == staging.path)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
        target = self.slots_dir / str(staging.version)
        if target.exists():  # an earlier copy that never became active
            shutil.rmtree(target)
        os.rename(staging.path, target)
        fsync_dir(self.slots_dir)
        fsync_dir(self.staging_dir)
        return Slot(staging.version, target, staging.manifest)

    # -- switching -----------------------------------------------------------------------
    def activate(self, slot: Slot, trial: dict | None) -> None:
        """Make slot the active one; the one active until now becomes previous."""
        old = self._active
        self.state["highest"] = max(self.highest, slot.version)
        self.state["trial"] = trial
        self._save_state()  # first: a crash from here on is finished or undone by recover()
        self._point("previous", old.version if old else None)
        self._point("active", slot.version)
        self._active, self._previous = slot, old
        self._prune()

    def revert(self, reason: str) -> tuple[Slot | None, Slot | None]:
        """Back to the previous slot (or the factory models); the active version is marked failed.
        Returns (the slot left, the slot now active)."""
        left = self._active
        if left is None:
            raise StoreError("no bundle is active: the factory models are running already")
        self.failed[str(left.version)] = reason
        self.state["trial"] = None
        self._save_state()
        self._switch_back(left.version, self._previous.version if self._previous else None)
        self._active, self._previous = self._previous, None
        # The slot left stays on disk until the next switch or start: the running lines may
        # still read its files until they have swapped back.
        return left, self._active

    def _switch_back(self, failed_version: int, previous: int | None) -> int | None:
        target = previous if previous is not None and previous != failed_version else None
        self._point("active", target)
        self._point("previous", None)
        return target

    def mark_good(self) -> None:
        self.state["trial"] = None
        self._save_state()

    def _point(self, name: str, version: int | None) -> None:
        link = self.root / name
        if version is None:
            if link.is_symlink() or link.exists():
                os.unlink(link)
                fsync_dir(self.root)
            return
        atomic_symlink(link, f"slots/{version}")

    def _prune(self) -> None:
        keep = {s.version for s in (self._active, self._previous) if s is not None}
        for version in self._slot_versions():
            if version not in keep:
                shutil.rmtree(self.slots_dir / str(version), ignore_errors=True)

    def status(self) -> dict:
        return {"active": self._active.summary() if self._active else None,
                "previous": self._previous.version if self._previous else None,
                "highest": self.highest, "trial": self.trial,
                "failed": {v: r for v, r in sorted(self.failed.items(), key=lambda kv: -int(kv[0]))[:5]}}
