"""Who may command this device: Ed25519 signatures, validity windows, replay protection, audit.

A signed command is a JSON object with `cmd_id`, `issued_at`, `expires_at` (Unix seconds) and
`sig`: the base64 Ed25519 signature of

    b"edge-agent-cmd/1\\n" + device_id + b"\\n" + command + b"\\n" + canonical JSON of the object without "sig"

(canonical: sorted keys, no spaces, UTF-8). The device id and the command name are signed
too, so a command signed for one device or one command cannot be replayed to another.

Seen cmd_ids are kept in SQLite until their expires_at, so a replay is refused across
restarts; a command valid for longer than max_validity_s is refused, which bounds that store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SIGNING_CONTEXT = b"edge-agent-cmd/1\n"


class ControlSetupError(ValueError):
    """A key file that cannot be used; the message names the file."""


def signed_bytes(device_id: str, command: str, body: dict) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "sig"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return SIGNING_CONTEXT + device_id.encode() + b"\n" + command.encode() + b"\n" + canonical.encode("utf-8")


def sign(private_key: Ed25519PrivateKey, device_id: str, command: str, body: dict) -> dict:
    """body plus its `sig`."""
    signature = private_key.sign(signed_bytes(device_id, command, body))
    return {**body, "sig": base64.b64encode(signature).decode("ascii")}


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) or raw base64 (32 bytes) Ed25519 public key."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ControlSetupError(f"control.public_keys: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ControlSetupError(f"control.public_keys: {path} is not an Ed25519 public key (PEM or base64): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ControlSetupError(f"control.public_keys: {path} is not an Ed25519 key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ControlSetupError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ControlSetupError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ControlSetupError(f"{path} is not an Ed25519 private key")
    return key


def generate_keypair(path: Path) -> tuple[Path, Path]:
    """Write PATH (private, mode 0600) and PATH.pub (public, PEM). Refuses to overwrite."""
    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for p in (path, public_path):
        if p.exists():
            raise ControlSetupError(f"{p} exists: not overwriting a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public_path


@dataclass(frozen=True)
class Decision:
    """Whether a command may run. code is "ok" or the reply code of the refusal."""

    code: str
    message: str = ""
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == "ok"


class ReplayStore:
    """cmd_ids seen, each until its expiry; in SQLite so a restart does not forget them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS seen (cmd_id TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise ControlSetupError(f"control.replay_db {self.path}: cannot open: {exc}") from None
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def remember(self, cmd_id: str, expires_at: float, now: float) -> bool:
        """True the first time cmd_id is seen (and records it); False for a replay."""
        with self._lock:
            if now >= self._next_prune:
                self._db.execute("DELETE FROM seen WHERE expires_at < ?", (now,))
                self._next_prune = now + 60
            cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (cmd_id, expires_at))
            return cursor.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Authoriser:
    """Decides, for one parsed command, whether it may run. Checks in the order of the reply codes:
    unsigned -> bad_signature -> not_yet_valid / expired / too_long -> replayed."""

    def __init__(self, device_id: str, public_keys: list[Ed25519PublicKey], replay: ReplayStore, *,
                 require_signature: bool, max_validity_s: float, clock_skew_s: float, clock=time.time):
        self._device_id = device_id
        self._keys = [(key_id(k), k) for k in public_keys]
        self._replay = replay
        self._require_signature = require_signature
        self._max_validity_s = max_validity_s
        self._clock_skew_s = clock_skew_s
        self._clock = clock

    def check(self, command: str, body: dict) -> Decision:
        signature = body.get("sig")
        signer = None
        if signature is None:
            if self._require_signature:
                return Decision("unsigned", "this device accepts only signed commands: sign with `edge-agent ctl --key`")
        else:
            signer = self._verify(command, body, signature)
            if signer is None:
                return Decision("bad_signature", "the signature does not match any of this device's operator keys "
                                "(wrong key, or the command was altered, or signed for another device or command)")
        cmd_id, issued_at, expires_at = body.get("cmd_id"), body.get("issued_at"), body.get("expires_at")
        if signer is not None or self._require_signature:
            missing = [k for k, v in (("cmd_id", cmd_id), ("issued_at", issued_at), ("expires_at", expires_at)) if v is None]
            if missing:
                return Decision("bad_request", f"a signed command needs {', '.join(missing)}", signer)
        now = self._clock()
        if expires_at is not None:
            if expires_at <= now:
                return Decision("expired", f"the command expired {now - expires_at:.0f} s ago", signer)
            if issued_at is not None:
                if issued_at > now + self._clock_skew_s:
                    return Decision("not_yet_valid", f"issued_at is {issued_at - now:.0f} s in this device's future "
                                    "(check both clocks)", signer)
                if expires_at - issued_at > self._max_validity_s:
                    return Decision("bad_request", f"valid for {expires_at - issued_at:.0f} s; this device accepts "
                                    f"at most {self._max_validity_s:g} s", signer)
            elif expires_at - now > self._max_validity_s:
                return Decision("bad_request", f"expires_at is more than {self._max_validity_s:g} s away", signer)
            if cmd_id is not None and not self._replay.remember(cmd_id, float(expires_at), now):
                return Decision("replayed", f"cmd_id {cmd_id!r} was already received", signer)
        return Decision("ok", "", signer)

    def _verify(self, command: str, body: dict, signature) -> str | None:
        if not isinstance(signature, str):
            return None
        try:
            raw = base64.b64decode(signature, validate=True)
            message = signed_bytes(self._device_id, command, body)
        except (binascii.Error, ValueError, TypeError):
            return None
        for kid, key in self._keys:
            try:
                key.verify(raw, message)
                return kid
            except InvalidSignature:
                continue
        return None


class AuditLog:
    """One JSON line per command received, whatever became of it. Rotated once at max_bytes."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024**2):
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the agent's lifetime
        except OSError as exc:
            raise ControlSetupError(f"control.audit_log {self.path}: cannot open for writing: {exc.strerror or exc}") from None

    def write(self, record: dict) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":"), ensure_ascii=False,
                          default=str) + "\n"
        with self._lock:
            try:
                if self._file.tell() + len(line) > self._max_bytes:
                    self._file.close()
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._file.write(line)
                self._file.flush()
            except (OSError, ValueError) as exc:
                log.error("audit log %s: cannot write: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._file.close()
