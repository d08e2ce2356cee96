"""HTTP(S) for the sync job: the manifest with ETag/If-None-Match, artefacts with resume.

The only module of the sync job that imports requests. Every request has a connect and a
read timeout, every download an overall deadline, a size limit (the size the signed manifest
gives: a byte more is refused) and a stop event checked between chunks. TLS is verified,
against `ca_bundle` when given (a private fleet CA), else the system's CAs.

A download that breaks off (a reset, a truncated body, a 5xx) resumes where it stopped with
an HTTP Range request, up to `retries` times with exponential backoff. A server that ignores
Range (200 instead of 206) is read again from the start. The sha256 is computed while the
bytes arrive; a mismatch after a resumed download is retried once from scratch (the resumed
part may belong to an older file), otherwise it is final.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from .. import __version__
from .files import sha256_file

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(Exception):
    """code: network, http_error, too_large, bad_hash, timeout, stopped."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchSettings:
    ca_bundle: Path | None = None  # None: the system's CAs
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # the longest silence in the middle of a response
    retries: int = 4  # per file, after the first attempt
    backoff_s: float = 1.0  # doubles per retry, with jitter, up to 30 s
    max_manifest_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ManifestResponse:
    body: bytes | None  # None: 304 Not Modified
    etag: str | None


class Fetcher:
    """One requests.Session for one sync run; close() it (or use `with`)."""

    def __init__(self, settings: FetchSettings, stop: threading.Event | None = None):
        self.settings = settings
        self._stop = stop or threading.Event()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"edge-agent/{__version__}"
        # Per request, not session.verify: requests lets REQUESTS_CA_BUNDLE override the session's.
        self._verify = str(settings.ca_bundle) if settings.ca_bundle else True
        self.bytes_downloaded = 0
        self.resumes = 0
        self.retries = 0

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def _timeout(self) -> tuple[float, float]:
        return self.settings.connect_timeout_s, self.settings.read_timeout_s

    # -- the manifest --------------------------------------------------------------------
    def get_manifest(self, url: str, etag: str | None = None) -> ManifestResponse:
        headers = {"If-None-Match": etag} if etag else {}
        limit = self.settings.max_manifest_bytes

        def attempt() -> ManifestResponse:
            with self._session.get(url, headers=headers, stream=True, timeout=self._timeout, verify=self._verify) as response:
                if response.status_code == 304:
                    return ManifestResponse(None, etag)
                self._check_status(response, url)
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise DownloadError("too_large", f"{url}: manifest of {declared} bytes, the limit is {limit}")
                body = bytearray()
                for chunk in response.iter_content(CHUNK):
                    body += chunk
                    if len(body) > limit:
                        raise DownloadError("too_large", f"{url}: manifest over {limit} bytes")
                    self._check_stop()
                if declared and declared.isdigit() and len(body) != int(declared):
                    raise _Truncated(f"{url}: manifest truncated at {len(body)} of {declared} bytes")
                return ManifestResponse(bytes(body), response.headers.get("ETag"))

        return self._with_retries(url, attempt, deadline=time.monotonic() + 10 * sum(self._timeout))

    # -- artefacts -----------------------------------------------------------------------
    def download(self, url: str, dest: Path, size: int, sha256: str, deadline: float) -> None:
        """dest ends up holding exactly `size` bytes whose sha256 is `sha256`, flushed to disk; else
        DownloadError. A partial dest from an earlier attempt is resumed."""
        for fresh in (False, True):
            if fresh:
                dest.unlink(missing_ok=True)
            resumed = self._with_retries(url, lambda: self._fetch_into(url, dest, size, deadline), deadline)
            digest = sha256_file(dest)
            if digest == sha256:
                return
            if fresh or not resumed:
                break
            log.warning("%s: sha256 mismatch after a resumed download; downloading it again from the start", url)
        dest.unlink(missing_ok=True)
        raise DownloadError("bad_hash", f"{url}: sha256 {digest[:16]}... is not the manifest's {sha256[:16]}...")

    def _fetch_into(self, url: str, dest: Path, size: int, deadline: float) -> bool:
        """One request. True if it resumed a partial file. Raises _Truncated to be retried."""
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            dest.unlink()
            have = 0
        if have == size:
            return False
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._session.get(url, headers=headers, stream=True, timeout=self._timeout, verify=self._verify) as response:
            if response.status_code == 416:  # our partial file does not fit what the server has
                dest.unlink(missing_ok=True)
                raise _Truncated(f"{url}: range {have}- not satisfiable; starting again")
            self._check_status(response, url)
            resumed = False
            if have and response.status_code == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    raise DownloadError("http_error", f"{url}: asked for bytes {have}-, got "
                                        f"{response.headers.get('Content-Range')!r}")
                resumed = True
                self.resumes += 1
            elif have:
                have = 0  # a 200: the server ignored Range, the whole file comes again
            written = have
            with open(dest, "ab" if resumed else "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise DownloadError("too_large", f"{url}: more than the manifest's {size} bytes")
                    out.write(chunk)
                    self.bytes_downloaded += len(chunk)
                    self._check_stop()
                    if time.monotonic() > deadline:
                        raise DownloadError("timeout", f"{url}: not downloaded in time ({written} of {size} bytes)")
                out.flush()
                os.fsync(out.fileno())
            if written < size:
                raise _Truncated(f"{url}: connection ended at {written} of {size} bytes")
            return resumed

    # -- shared --------------------------------------------------------------------------
    def _with_retries(self, url: str, attempt, deadline: float):
        delay = self.settings.backoff_s
        for n in range(self.settings.retries + 1):
            try:
                return attempt()
            except (_Truncated, _Retryable, requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if isinstance(exc, requests.exceptions.SSLError):
                    raise DownloadError("network", f"{url}: TLS failed: {_short(exc)} "
                                        "(sync.ca_bundle names the CA that signed the server's certificate)") from None
                last = _short(exc)
            if n == self.settings.retries:
                break
            self.retries += 1
            wait = min(30.0, delay) * (0.5 + random.random() / 2)
            if time.monotonic() + wait > deadline:
                raise DownloadError("timeout", f"{url}: out of time after {n + 1} attempt(s): {last}")
            log.info("%s: %s; retrying in %.1f s", url, last, wait)
            if self._stop.wait(wait):
                raise DownloadError("stopped", "the agent is stopping")
            delay *= 2
        raise DownloadError("network", f"{url}: {last} (after {self.settings.retries + 1} attempts)")

    def _check_status(self, response, url: str) -> None:
        if response.status_code in (200, 206):
            return
        if response.status_code in _RETRYABLE:
            raise _Retryable(f"HTTP {response.status_code}")
        raise DownloadError("http_error", f"{url}: HTTP {response.status_code} {response.reason}")

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise DownloadError("stopped", "the agent is stopping")


class _Truncated(Exception):
    pass


class _Retryable(Exception):
    pass


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
