"""The bundle manifest: what a bundle holds, signed with Ed25519 in a DSSE envelope.

On the wire (`manifest.json`) the manifest is a DSSE envelope (the in-toto/Sigstore
"Dead Simple Signing Envelope"): the payload is the manifest's canonical JSON, base64, and
each signature is over PAE(payloadType, payload), so it covers the exact bytes and no JSON
re-serialisation has to agree between signer and device:

    {"payloadType": "application/vnd.edge-agent.bundle+json",
     "payload": "<base64 of the manifest JSON>",
     "signatures": [{"keyid": "<16 hex>", "sig": "<base64 Ed25519>"}]}

The manifest (README "Sync" has an example):

    version      integer >= 1; never reused, never lower than the highest installed
    expires_at   ISO 8601 UTC; a manifest past it is refused (a frozen or replayed server)
    artefacts    {slot path: {sha256, size, url}}; url is relative to the manifest's URL
    models       {config model name: {dir, golden: [{image, detections | top}]}}
    catalog      {path, version}: the product database, optional

Nothing here touches the network or the disk; the sync job does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..control.auth import key_id

PAYLOAD_TYPE = "application/vnd.edge-agent.bundle+json"
SPEC = 1
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """Why a manifest is refused. code is the sync outcome's reason code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what each signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _safe_path(value: str) -> str:
    parts = value.split("/")
    if not 1 <= len(parts) <= 8 or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"{value!r} is not a safe relative path (letters, digits, _ . -; no '..', no leading '/')")
    return value


SlotPath = Annotated[str, Field(max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Artefact(_Strict):
    sha256: str = Field(pattern=_SHA256.pattern)
    size: int = Field(ge=0)
    url: str = Field(min_length=1, max_length=2048)  # relative to the manifest URL, or absolute http(s)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if ":" in value.split("/")[0] and not value.startswith(("https://", "http://")):
            raise ValueError(f"url {value!r}: only http(s) or a URL relative to the manifest")
        return value


class GoldenDetection(_Strict):
    label: str
    score: float = Field(ge=0, le=1)
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, source pixels


class GoldenCase(_Strict):
    image: SlotPath
    detections: list[GoldenDetection] | None = None  # a detector's expected output
    top: tuple[str, float] | None = None  # a classifier's expected top-1 label and probability

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.detections is None) == (self.top is None):
            raise ValueError("a golden case has either detections (detector) or top (classifier)")
        return self


class ModelEntry(_Strict):
    dir: SlotPath  # the IR folder in the slot: one .xml, its .bin, metadata.yaml
    golden: list[GoldenCase] = Field(min_length=1)
    threshold: float = Field(0.1, gt=0, lt=1)  # detections at or over it were recorded as expected


class CatalogEntry(_Strict):
    path: SlotPath
    version: str = Field(min_length=1, max_length=64)


class Manifest(_Strict):
    type: Literal["edge-agent-bundle"] = "edge-agent-bundle"
    spec: Literal[1] = 1
    version: int = Field(ge=1, le=2**53)
    label: str = Field("", max_length=200)
    created_at: str
    expires_at: str
    artefacts: dict[SlotPath, Artefact] = Field(min_length=1)
    models: dict[str, ModelEntry] = {}
    catalog: CatalogEntry | None = None

    @field_validator("created_at", "expires_at")
    @classmethod
    def _iso(cls, value: str) -> str:
        parse_time(value)
        return value

    @field_validator("artefacts")
    @classmethod
    def _paths(cls, value: dict) -> dict:
        for path in value:
            _safe_path(path)
        return value

    @model_validator(mode="after")
    def _references(self):
        if not self.models and self.catalog is None:
            raise ValueError("the bundle has neither models nor a catalog")
        for name, model in self.models.items():
            _safe_path(model.dir)
            files = self.model_files(name)
            xml = [p for p in files if p.endswith(".xml")]
            if len(xml) != 1 or xml[0][:-4] + ".bin" not in files:
                raise ValueError(f"models.{name}: {model.dir}/ needs exactly one .xml and its .bin among the artefacts")
            for case in model.golden:
                if case.image not in self.artefacts:
                    raise ValueError(f"models.{name}: golden image {case.image} is not an artefact")
        if self.catalog is not None and self.catalog.path not in self.artefacts:
            raise ValueError(f"catalog {self.catalog.path} is not an artefact")
        return self

    def model_files(self, name: str) -> list[str]:
        prefix = self.models[name].dir.rstrip("/") + "/"
        return sorted(p for p in self.artefacts if p.startswith(prefix))

    @property
    def total_bytes(self) -> int:
        return sum(a.size for a in self.artefacts.values())

    def expires(self) -> float:
        return parse_time(self.expires_at)


def parse_time(value: str) -> float:
    """ISO 8601 with a zone (Z or +hh:mm) -> Unix seconds."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (end it with Z)")
    return moment.timestamp()


def iso_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(manifest: Manifest) -> bytes:
    return json.dumps(manifest.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def sign(manifest: Manifest, keys: list[Ed25519PrivateKey]) -> bytes:
    """The envelope bytes to publish as manifest.json."""
    payload = canonical(manifest)
    signatures = [{"keyid": key_id(k.public_key()), "sig": base64.b64encode(k.sign(pae(PAYLOAD_TYPE, payload))).decode()}
                  for k in keys]
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(), "signatures": signatures}
    return json.dumps(envelope, indent=1).encode() + b"\n"


def verify(envelope_bytes: bytes, keys: list[Ed25519PublicKey]) -> Manifest:
    """The manifest, if a trusted key signed it; else ManifestError (code bad_signature / bad_manifest)."""
    try:
        envelope = json.loads(envelope_bytes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError("bad_manifest", f"the manifest is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE \
            or not isinstance(envelope.get("payload"), str) or not isinstance(envelope.get("signatures"), list):
        raise ManifestError("bad_manifest", f"the manifest is not a DSSE envelope of {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError("bad_manifest", "the manifest's payload is not base64") from None
    message = pae(PAYLOAD_TYPE, payload)
    trusted = {key_id(k): k for k in keys}
    signer = None
    for entry in envelope["signatures"]:
        key = trusted.get(entry.get("keyid")) if isinstance(entry, dict) else None
        if key is None or not isinstance(entry.get("sig"), str):
            continue
        try:
            key.verify(base64.b64decode(entry["sig"], validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        signer = entry["keyid"]
        break
    if signer is None:
        ids = ", ".join(str(e.get("keyid")) for e in envelope["signatures"] if isinstance(e, dict)) or "none"
        raise ManifestError("bad_signature", f"no valid signature by a trusted key (signed by: {ids}; trusted: "
                                             f"{', '.join(trusted) or 'none'})")
    try:
        return Manifest.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ManifestError("bad_manifest", f"signed manifest does not validate: {where}: {first['msg']}") from None
