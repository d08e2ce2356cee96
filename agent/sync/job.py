"""The nightly sync: fetch, verify, stage, check, switch, hot-swap, trial; rollback.

One thread ("sync") runs it all, one thing at a time:

    schedule   once a night at a random moment inside `window` (so a fleet does not call the
               server at the same second), retried every `retry_s` inside the window after a
               network failure; and whenever `sync/now` asks
    fetch      the manifest (If-None-Match), refused unless a trusted key signed it, it has
               not expired, and its version is not lower than the highest installed
    stage      each artefact into a staging folder beside the slots: copied from the active or
               previous slot when unchanged, else downloaded (resumed, size-limited); every one
               checked against its sha256
    check      the product database (integrity, schema) and every model on the golden set
    switch     the slot committed, the lines' new models compiled and warmed for their
               cameras, `active` renamed over, and the lines swapped between two inspections
    trial      `trial.duration_s` of watching: inference errors, dropped triggers, a growing
               backlog or inference `max_slowdown` times slower revert to the previous slot;
               so does the agent restarting uncleanly `trial.crash_limit` times

Every outcome is reported through `report(outcome)`; the App publishes it over MQTT.
"""

from __future__ import annotations

import datetime
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from .. import catalog
from .download import DownloadError, Fetcher, FetchSettings
from .files import fsync_file, sha256_file
from .golden import GoldenSettings, check_model
from .manifest import Manifest, ManifestError, canonical, verify
from .schedule import next_run, window_length
from .store import BundleStore, Slot, StoreError

log = logging.getLogger(__name__)

EVENT_SCHEMA = 1
# Outcomes: what a sync, a trial or a rollback came to (README "Sync").
ACTIVATED, UP_TO_DATE, REFUSED, FAILED, SKIPPED = "activated", "up_to_date", "refused", "failed", "skipped"
TRIAL_PASSED, REVERTED, ROLLED_BACK, RECOVERED = "trial_passed", "reverted", "rolled_back", "recovered"
_DISK_MARGIN = 64 * 1024**2


@dataclass(frozen=True)
class TrialSettings:
    duration_s: float = 600.0
    crash_limit: int = 1  # unclean restarts during the trial that revert it
    max_inference_errors: int = 0
    max_backlog: int = 8  # frames waiting for inference, two checks in a row
    max_slowdown: float = 3.0  # median inference time against the one before the switch
    check_interval_s: float = 1.0


@dataclass(frozen=True)
class SyncSettings:
    manifest_url: str
    window: tuple[int, int] | None = None  # minutes after local midnight (start, end); None: on command only
    retry_s: float = 600.0
    timeout_s: float = 1800.0  # one whole sync
    max_artefact_bytes: int = 512 * 1024**2
    max_bundle_bytes: int = 2 * 1024**3
    fetch: FetchSettings = FetchSettings()
    golden: GoldenSettings = GoldenSettings()
    trial: TrialSettings = TrialSettings()


@dataclass(frozen=True)
class Outcome:
    outcome: str  # one of the constants above
    code: str  # why, in one word: ok, not_modified, bad_signature, bad_hash, expired, rollback, golden_failed, ...
    message: str
    version: int | None = None
    trigger: str = "schedule"  # schedule, command, start, trial
    at: float = field(default_factory=time.time)
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in (ACTIVATED, UP_TO_DATE, TRIAL_PASSED, ROLLED_BACK)

    def payload(self) -> dict:
        return {"schema": EVENT_SCHEMA, "outcome": self.outcome, "code": self.code, "message": self.message,
                "version": self.version, "trigger": self.trigger, "ts": round(self.at, 3), "details": self.details}


class Prepared(Protocol):
    def apply(self) -> None: ...


class Host(Protocol):
    """What the job needs from the App (agent/app.py implements it)."""

    def load_runner(self, model_name: str, model_dir) -> object: ...

    def prepare(self, slot: Slot | None) -> Prepared: ...

    def line_load(self) -> dict[str, dict]: ...

    def report(self, outcome: Outcome) -> None: ...

    def publish_sync_status(self) -> None: ...


class _Refused(Exception):
    def __init__(self, outcome: str, code: str, message: str):
        super().__init__(message)
        self.outcome, self.code, self.message = outcome, code, message


class SyncJob:
    def __init__(self, settings: SyncSettings, store: BundleStore, keys, host: Host, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.settings = settings
        self.store = store
        self._keys = keys
        self._host = host
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # one sync, trial decision or rollback at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._requested: list[threading.Event] = []
        self._requests_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None
        self.running = False
        self.phase: str | None = None  # what a running sync is doing
        self.last: Outcome | None = None
        self.next_at: float | None = None
        self._window_start: datetime.datetime | None = None
        self._retry_at: float | None = None
        self._trial_base: dict | None = None  # line counters when this process started watching
        self._backlog_strikes = 0
        self._pending_reports: list[Outcome] = []
        self.counters = dict.fromkeys(("runs", "activated", "refused", "failed", "reverted"), 0)

    # -- start-up (before the models load) -----------------------------------------------
    def note_start(self) -> None:
        """Boot counting: a trial that was running when the agent stopped uncleanly counts a crash;
        at trial.crash_limit the new version is reverted before its models are loaded."""
        for note in self.store.recovery_notes:
            self._pending_reports.append(Outcome(RECOVERED, "recovered", note, trigger="start"))
        trial = self.store.trial
        if trial is None:
            return
        if not trial.get("clean_stop", True):
            trial["crashes"] = int(trial.get("crashes", 0)) + 1
        trial["clean_stop"] = False
        if trial["crashes"] >= self.settings.trial.crash_limit:
            reason = f"the agent stopped uncleanly {trial['crashes']} time(s) during the trial"
            left, now = self.store.revert(reason)
            self._pending_reports.append(Outcome(REVERTED, "crashed", f"version {left.version} reverted: {reason}; "
                                                 f"running {_name(now)}", left.version, "start"))
        else:
            self.store.save()

    # -- lifetime ------------------------------------------------------------------------
    def start(self) -> None:
        self._plan()
        self._host.publish_sync_status()
        for outcome in self._pending_reports:
            self._finish(outcome)
        self._pending_reports.clear()
        self._thread = threading.Thread(target=self._loop, name="sync", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stops a download at its next chunk. A trial stays on record, marked a clean stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if not self._lock.acquire(timeout=timeout_s):  # a golden run or compile that would not stop
            log.warning("sync: still busy at stop; a trial, if any, will count this stop as a crash")
            return
        try:
            trial = self.store.trial
            if trial is not None:
                trial["clean_stop"] = True
                self.store.save()
        finally:
            self._lock.release()

    def request(self, force: bool = False) -> threading.Event:
        """Sync as soon as the thread is free; the event is set when that sync has finished.
        force: fetch the manifest even if its ETag has not changed."""
        done = threading.Event()
        with self._requests_lock:
            self._requested.append(done)
            if force:
                self._etag = None
        self._wake.set()
        return done

    # -- the thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # ours: log it and carry on, the schedule and the trial must go on
                log.exception("sync job")
            self._wake.wait(self.settings.trial.check_interval_s if self.store.trial else 1.0)
            self._wake.clear()

    def _step(self) -> None:
        if self.store.trial is not None:  # first: a trial that is due ends before a sync is refused for it
            self._check_trial()
        with self._requests_lock:
            waiting, self._requested = self._requested, []
        try:
            if waiting:
                self._run("command")
            elif self.next_at is not None and self._clock() >= self.next_at:
                self._run("schedule")
                self._plan()
        finally:
            for done in waiting:
                done.set()

    def _plan(self) -> None:
        window = self.settings.window
        if window is None:
            self.next_at = None
            return
        last = self.last
        if self._retry_at is not None and last is not None and last.outcome == FAILED:
            retry = self._retry_at
            if retry < (self._window_start + window_length(window)).timestamp():
                self.next_at = retry
                return
        moment, start = next_run(datetime.datetime.fromtimestamp(self._clock()), window, self._rng,
                                 self._window_start)
        self.next_at, self._window_start = moment.timestamp(), start

    def _run(self, trigger: str) -> None:
        if self.store.trial is not None:
            trial = self.store.trial
            self._finish(Outcome(SKIPPED, "trial_running",
                                 f"version {trial['version']} is on trial until "
                                 f"{time.strftime('%H:%M:%S', time.localtime(trial['until']))}; sync after it",
                                 trial["version"], trigger))
            return
        self.running = True
        try:
            outcome = self._sync(trigger)
        except Exception as exc:  # ours: the sync job must outlive any bug in it
            log.exception("sync failed")
            outcome = Outcome(FAILED, "internal_error", f"the sync failed: {exc}; see the agent's log",
                              trigger=trigger)
        finally:
            self.running = False
            self.phase = None
        self._retry_at = self._clock() + self.settings.retry_s if outcome.outcome == FAILED else None
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        self.last = outcome
        key = {ACTIVATED: "activated", REFUSED: "refused", FAILED: "failed", REVERTED: "reverted"}.get(outcome.outcome)
        if key:
            self.counters[key] += 1
        level = logging.INFO if outcome.ok or outcome.outcome in (SKIPPED, RECOVERED) else logging.WARNING
        log.log(level, "sync %s (%s): %s", outcome.outcome, outcome.code, outcome.message)
        try:
            self._host.report(outcome)
        except Exception:
            log.exception("reporting the sync outcome failed")

    # -- one sync ------------------------------------------------------------------------
    def _sync(self, trigger: str) -> Outcome:
        self.counters["runs"] += 1
        deadline = time.monotonic() + self.settings.timeout_s
        with self._lock, Fetcher(self.settings.fetch, self._stop) as fetcher:
            started = time.monotonic()
            self.phase = "manifest"
            try:
                response = fetcher.get_manifest(self.settings.manifest_url, self._etag)
            except DownloadError as exc:
                return Outcome(FAILED, exc.code, f"manifest: {exc}", trigger=trigger)
            if response.body is None:
                version = self.store.active.version if self.store.active else None
                return Outcome(UP_TO_DATE, "not_modified", "the manifest has not changed", version, trigger)
            try:
                manifest = verify(response.body, self._keys)
                self._admit(manifest)
            except ManifestError as exc:
                self._etag = response.etag  # the same bytes would be refused again
                return Outcome(REFUSED, exc.code, f"manifest refused: {exc}", trigger=trigger)
            except _Refused as exc:
                self._etag = response.etag
                return Outcome(exc.outcome, exc.code, exc.message, manifest.version, trigger)
            try:
                slot, timings = self._stage(manifest, response.body, fetcher, deadline)
            except _Refused as exc:
                if exc.outcome == REFUSED and exc.code != "bad_hash":  # a corrupted file may come right next time
                    self._etag = response.etag
                return Outcome(exc.outcome, exc.code, exc.message, manifest.version, trigger,
                               details={"bytes": fetcher.bytes_downloaded, "resumes": fetcher.resumes})
            self.phase = "switch"
            t0 = time.monotonic()
            try:
                prepared = self._host.prepare(slot)
            except Exception as exc:  # a model the lines cannot use (ModelLoadError...): nothing switched
                log.exception("preparing version %d for the lines failed", slot.version)
                return Outcome(REFUSED, "model_unusable", f"version {slot.version}: the lines cannot load it: {exc}",
                               slot.version, trigger)
            if self._stop.is_set():  # the agent stops: no switch under lines that are stopping
                return Outcome(FAILED, "stopped", "the agent is stopping", slot.version, trigger)
            previous = self.store.active
            now = self._clock()
            load = self._host.line_load()
            self.store.activate(slot, {
                "version": slot.version, "from": previous.version if previous else None, "started_at": now,
                "until": now + self.settings.trial.duration_s, "crashes": 0, "clean_stop": False,
                "infer_ms_p50": {name: line.get("infer_ms_p50") for name, line in load.items()},
            })
            prepared.apply()
            self._trial_base, self._backlog_strikes = self._host.line_load(), 0
            timings["switch_s"] = round(time.monotonic() - t0, 3)
            timings["total_s"] = round(time.monotonic() - started, 3)
            golden, reused = timings.pop("golden", []), timings.pop("reused", 0)
            self._etag = response.etag
            return Outcome(ACTIVATED, "ok", f"version {slot.version} active (was {_name(previous)}); on trial for "
                           f"{self.settings.trial.duration_s:g} s", slot.version, trigger,
                           details={"timings": timings, "golden": golden, "bytes": fetcher.bytes_downloaded,
                                    "reused": reused, "resumes": fetcher.resumes, "retries": fetcher.retries})

    def _admit(self, manifest: Manifest) -> None:
        store, version = self.store, manifest.version
        now = self._clock()
        if manifest.expires() <= now:
            raise _Refused(REFUSED, "expired", f"version {version}: the manifest expired at {manifest.expires_at}")
        active = store.active
        if active is not None and version == active.version:
            if canonical(manifest) == canonical(active.manifest):
                raise _Refused(UP_TO_DATE, "up_to_date", f"version {version} is the active one")
            raise _Refused(REFUSED, "version_reused", f"version {version} is active with other contents: "
                           "a version number is never reused")
        if version < store.highest:
            raise _Refused(REFUSED, "rollback", f"version {version} is older than the highest installed, "
                           f"{store.highest} (anti-rollback)")
        if str(version) in store.failed:
            raise _Refused(SKIPPED, "failed_before", f"version {version} failed before "
                           f"({store.failed[str(version)]}); waiting for a newer one")
        limits = self.settings
        big = [p for p, a in manifest.artefacts.items() if a.size > limits.max_artefact_bytes]
        if big or manifest.total_bytes > limits.max_bundle_bytes:
            raise _Refused(REFUSED, "too_large", f"version {version}: {manifest.total_bytes} bytes"
                           + (f", {big[0]} over sync.max_artefact_bytes" if big else ", over sync.max_bundle_bytes"))
        if store.free_bytes() < manifest.total_bytes + _DISK_MARGIN:
            raise _Refused(FAILED, "disk_full", f"version {version} needs {manifest.total_bytes} bytes; "
                           f"{store.free_bytes()} are free in {store.root}")
        base = urlsplit(self.settings.manifest_url)
        for path, artefact in manifest.artefacts.items():
            url = urlsplit(urljoin(self.settings.manifest_url, artefact.url))
            if base.scheme == "https" and url.scheme != "https":
                raise _Refused(REFUSED, "bad_manifest", f"{path}: {artefact.url} would leave HTTPS")

    def _stage(self, manifest: Manifest, envelope: bytes, fetcher: Fetcher, deadline: float) -> tuple[Slot, dict]:
        staging = self.store.begin(envelope, manifest)
        committed = False
        timings: dict = {}
        try:
            self.phase = "download"
            t0 = time.monotonic()
            local, reused = self._local_artefacts(), 0
            for path, artefact in manifest.artefacts.items():
                target = staging.file(path)
                if artefact.sha256 in local and _copy_verified(local[artefact.sha256], target, artefact):
                    reused += 1  # unchanged since a bundle this device has: not downloaded
                    continue
                try:
                    fetcher.download(urljoin(self.settings.manifest_url, artefact.url), target,
                                     artefact.size, artefact.sha256, deadline)
                except DownloadError as exc:
                    final = exc.code in ("bad_hash", "too_large")
                    raise _Refused(REFUSED if final else FAILED, exc.code, f"{path}: {exc}") from None
            timings["download_s"], timings["reused"] = round(time.monotonic() - t0, 3), reused
            self.phase = "check"
            t0 = time.monotonic()
            if manifest.catalog is not None:
                try:
                    info = catalog.check(staging.path / manifest.catalog.path)
                except catalog.CatalogError as exc:
                    raise _Refused(REFUSED, "bad_catalog", str(exc)) from None
                if info.version != manifest.catalog.version:
                    raise _Refused(REFUSED, "bad_catalog", f"the product database is version {info.version}, "
                                   f"the manifest says {manifest.catalog.version}")
            golden = []
            for name, entry in manifest.models.items():
                try:
                    runner = self._host.load_runner(name, staging.path / entry.dir)
                except Exception as exc:  # ModelLoadError and what OpenVINO raises
                    raise _Refused(REFUSED, "model_unusable", f"model {name}: {exc}") from None
                if runner is None:
                    continue  # no model of that name in the config: kept, unused
                report = check_model(name, runner, entry, staging.path, self.settings.golden)
                golden.append(report.summary())
                if not report.passed:
                    raise _Refused(REFUSED, "golden_failed", f"model {name} failed the golden check: "
                                   + "; ".join(report.failures[:3]))
            timings["check_s"] = round(time.monotonic() - t0, 3)
            timings["golden"] = golden
            if self._stop.is_set():
                raise _Refused(FAILED, "stopped", "the agent is stopping")
            slot = self.store.commit(staging)
            committed = True
            return slot, timings
        except (OSError, StoreError) as exc:
            raise _Refused(FAILED, "disk_error", f"staging version {manifest.version}: {exc}") from None
        finally:
            if not committed:
                self.store.discard(staging)

    def _local_artefacts(self) -> dict[str, Path]:
        """sha256 -> a file with that content in the active or previous slot."""
        found = {}
        for slot in (self.store.active, self.store.previous):
            if slot is not None:
                for path, artefact in slot.manifest.artefacts.items():
                    found.setdefault(artefact.sha256, slot.path / path)
        return found

    # -- trial ---------------------------------------------------------------------------
    def _check_trial(self) -> None:
        with self._lock:
            trial = self.store.trial
            if trial is None:
                return
            load = self._host.line_load()
            if self._trial_base is None:  # watching a trial begun before a restart
                self._trial_base = load
            problem = self._trial_problem(trial, load)
            if problem is None and self._clock() < trial["until"]:
                return
            if problem is None:
                self.store.mark_good()
                self._trial_base = None
                outcome = Outcome(TRIAL_PASSED, "ok", f"version {trial['version']} passed its trial and stays",
                                  trial["version"], "trial")
            else:
                outcome = self._revert(f"trial failed: {problem}", REVERTED, "trial_failed", "trial")
        self._finish(outcome)

    def _trial_problem(self, trial: dict, load: dict) -> str | None:
        problem, self._backlog_strikes = trial_problem(self.settings.trial, self._trial_base or {}, trial, load,
                                                       self._backlog_strikes)
        return problem

    # -- rollback ------------------------------------------------------------------------
    def rollback(self, reason: str, trigger: str = "command") -> Outcome:
        """Back to the previous slot now. Raises StoreError when there is nothing to go back to or
        a sync is running."""
        if not self._lock.acquire(timeout=2.0):
            raise StoreError(f"a sync is running ({self.phase or 'busy'}); retry when it has finished")
        try:
            outcome = self._revert(reason, ROLLED_BACK, "ok", trigger)
        finally:
            self._lock.release()
        self._finish(outcome)
        return outcome

    def _revert(self, reason: str, kind: str, code: str, trigger: str) -> Outcome:
        active = self.store.active
        if active is None:
            raise StoreError("no bundle is active: the factory models are running")
        target = self.store.previous
        prepared = self._host.prepare(target)  # compiled before the switch, like an update
        left, now = self.store.revert(reason)
        prepared.apply()
        self._trial_base = None
        return Outcome(kind, code, f"version {left.version} left ({reason}); running {_name(now)}", left.version,
                       trigger, details={"to": now.version if now else None})

    # -- reporting -----------------------------------------------------------------------
    def status(self) -> dict:
        return {**self.store.status(), "running": self.running, "phase": self.phase,
                "next_sync_at": round(self.next_at, 3) if self.next_at else None,
                "last": self.last.payload() if self.last else None, "counters": dict(self.counters)}


def trial_problem(limits: TrialSettings, base: dict, trial: dict, load: dict, strikes: int) -> tuple[str | None, int]:
    """Why the version on trial fails, or None; and the new count of checks in a row with a backlog.

    base and load: per line, the counters of App.line_load() when this process began watching
    and now; trial: the trial record (infer_ms_p50: per line, the median before the switch).
    """
    backlog = False
    for name, now in load.items():
        before = base.get(name, {})
        errors = now["inference_errors"] - before.get("inference_errors", 0)
        if errors > limits.max_inference_errors:
            return f"line {name}: {errors} inference error(s)", 0
        dropped = now["triggers_dropped"] - before.get("triggers_dropped", 0)
        if dropped > 0:
            return f"line {name}: {dropped} trigger(s) dropped (throughput collapse)", 0
        backlog |= now["inspect_backlog"] >= limits.max_backlog
        baseline = (trial.get("infer_ms_p50") or {}).get(name)
        current = now.get("infer_ms_p50")
        if baseline and current and current > limits.max_slowdown * baseline:
            return f"line {name}: inference {current / baseline:.1f}x slower ({current:.1f} ms, was {baseline:.1f})", 0
    strikes = strikes + 1 if backlog else 0
    if strikes >= 2:
        return f"{limits.max_backlog} or more frames waiting for inference (throughput collapse)", strikes
    return None, strikes


def _copy_verified(source: Path, target: Path, artefact) -> bool:
    """Copy an unchanged artefact from a local slot; False (and nothing left) unless it matches."""
    try:
        shutil.copyfile(source, target)
        fsync_file(target)
        if target.stat().st_size == artefact.size and sha256_file(target) == artefact.sha256:
            return True
    except OSError as exc:
        log.warning("cannot reuse %s (%s): downloading it", source, exc)
    target.unlink(missing_ok=True)
    return False


def _name(slot: Slot | None) -> str:
    return f"version {slot.version}" if slot else "the factory models"

