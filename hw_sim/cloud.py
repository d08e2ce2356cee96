"""The cloud side of the nightly sync: an HTTP(S) server on loopback serving bundles.

It serves a folder as `models/make_bundle.py` writes it (`ROOT/<version>/...` with each
bundle's signed `manifest.json`) and, at `/manifest.json`, the manifest of the version
published last (`publish(version)`), or any bytes set with `set_manifest()`. It honours
If-None-Match (ETag: the body's sha256) and single byte ranges (`Range: bytes=N-` or `N-M`).

Faults, injected for the next `count` matching requests (`path` is an fnmatch pattern of the
request path, default every file):

    http_500        HTTP 500
    slow            the body at `rate` bytes/s (default 64 KiB/s)
    truncate        Content-Length of the whole file, then the connection is closed half way
    wrong_hash      one byte of the body flipped (a tampered or corrupted artefact)
    bad_signature   the manifest's first signature altered
    ignore_range    a 200 with the whole body whatever Range asked for

With `tls=True` it serves HTTPS with a certificate from its own throw-away CA (`ca_file`).
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from .http_thread import HttpThread

FAULTS = ("http_500", "slow", "truncate", "wrong_hash", "bad_signature", "ignore_range")


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int
    fault: str | None


@dataclass
class _Fault:
    kind: str
    count: int
    pattern: str
    rate: int


def make_ca_and_server_cert(folder: Path, hostnames=("localhost",), ips=("127.0.0.1",)) -> tuple[Path, Path, Path]:
    """A CA certificate and a server certificate + key it signed: (ca.pem, server.pem, server.key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hw-sim cloud CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class SimCloud:
    """Context manager: the update server. `url` is the manifest's URL."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, tls: bool = False):
        self.root = Path(root)
        self._address = (host, port)
        self._tls = tls
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.ca_file: Path | None = None
        self._manifest: bytes | None = None
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: HttpThread | None = None
        self.requests: list[Request] = []

    # -- what it serves ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.address if self._server else self._address
        return f"{'https' if self._tls else 'http'}://{host}:{port}/"

    @property
    def url(self) -> str:
        return self.base_url + "manifest.json"

    def publish(self, version: int) -> None:
        """Serve ROOT/<version>/manifest.json at /manifest.json from now on."""
        self.set_manifest((self.root / str(version) / "manifest.json").read_bytes())

    def set_manifest(self, body: bytes | None) -> None:
        with self._lock:
            self._manifest = body

    def inject(self, fault: str, count: int = 1, path: str = "*", rate: int = 64 * 1024) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown cloud fault {fault!r} (known: {', '.join(FAULTS)})")
        with self._lock:
            self._faults.append(_Fault(fault, count, path, rate))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_for(self, pattern: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if fnmatch.fnmatch(r.path, pattern)]

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatch(path, fault.pattern):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _body(self, path: str) -> bytes | None:
        if path == "/manifest.json":
            with self._lock:
                return self._manifest
        file = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() not in file.parents or not file.is_file():
            return None
        return file.read_bytes()

    def _record(self, path: str, range_header: str | None, status: int, fault: _Fault | None) -> None:
        with self._lock:
            self.requests.append(Request(path, range_header, status, fault.kind if fault else None))

    # -- lifetime ------------------------------------------------------------------------
    def start(self) -> None:
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                range_header = self.headers.get("Range")
                fault = cloud._take_fault(path)
                kind = fault.kind if fault else None
                if kind == "http_500":
                    return self._status(path, range_header, fault, 500)
                body = cloud._body(path)
                if body is None:
                    return self._status(path, range_header, fault, 404)
                if kind == "wrong_hash" and body:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                if kind == "bad_signature":
                    body = _break_signature(body)
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if self.headers.get("If-None-Match") == etag:
                    cloud._record(path, range_header, 304, fault)
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, start, end = 200, 0, len(body)
                if range_header and kind != "ignore_range":
                    parsed = _parse_range(range_header, len(body))
                    if parsed is None:
                        return self._status(path, range_header, fault, 416,
                                            {"Content-Range": f"bytes */{len(body)}"})
                    status, (start, end) = 206, parsed
                cloud._record(path, range_header, status, fault)
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if path.endswith(".json")
                                 else "application/octet-stream")
                self.send_header("Content-Length", str(end - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:end]
                try:
                    if kind == "truncate":
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if kind == "slow":
                        step = max(1, fault.rate // 20)
                        for i in range(0, len(payload), step):
                            self.wfile.write(payload[i:i + step])
                            self.wfile.flush()
                            time.sleep(0.05)
                        return
                    self.wfile.write(payload)
                except OSError:  # a reset, a broken pipe, a TLS EOF: the client gave up, as a slow body invites
                    self.close_connection = True

            def _status(self, path, range_header, fault, code: int, headers: dict | None = None):
                cloud._record(path, range_header, code, fault)
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet: the test output is not an access log
                pass

        wrap = None
        if self._tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="hw-sim-cloud-")
            self.ca_file, cert, key = make_ca_and_server_cert(Path(self._tmp.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            wrap = context.wrap_socket
        self._server = HttpThread(self._address, Handler, "sim-cloud", wrap)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SimCloud:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=N-` or `bytes=N-M` -> (start, end exclusive); None if not satisfiable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), (int(last) + 1 if last else size)
    if start >= size or end <= start:
        return None
    return start, min(end, size)


def _break_signature(body: bytes) -> bytes:
    try:
        envelope = json.loads(body)
        sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return body
    sig[0] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(envelope, indent=1).encode() + b"\n"
