"""A real mosquitto broker on a loopback port, for tests and the demo.

The agent talks to this exactly as it talks to a production broker; only the
address differs. The broker can be stopped and started again on the same port,
which is how outage tests simulate a network or broker failure.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .ports import server_port

log = logging.getLogger(__name__)

_DEFAULT_BINARY = Path("/usr/sbin/mosquitto")
_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 3.0
_LOG_TAIL_LINES = 30


class BrokerUnavailable(RuntimeError):
    """The mosquitto binary is not installed on this machine."""


class BrokerStartError(RuntimeError):
    """mosquitto was found but did not come up; the message carries its log tail."""


def find_mosquitto() -> Path:
    if _DEFAULT_BINARY.is_file():
        return _DEFAULT_BINARY
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    raise BrokerUnavailable(
        f"mosquitto is not installed (looked for {_DEFAULT_BINARY} and on PATH): "
        "install it with `sudo apt-get install -y mosquitto`"
    )




def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process, anonymous, on host:port.

    port=0 picks a free port at the first start() and keeps it, so a stopped
    broker comes back where its clients expect it.

    persistent=True keeps sessions, subscriptions and queued messages across a
    stop() and start() (saved at stop), as a production broker does: a subscriber
    with a persistent session then misses nothing published while it reconnects.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", workdir: Path | None = None, persistent: bool = False):
        self._host = host
        self._port = port
        self._persistent = persistent
        self._workdir = Path(workdir) if workdir is not None else None
        self._owned_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None  # the file object mosquitto's stdout/stderr go to
        self._log_path: Path | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port; 0 until the first start() when none was given."""
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> None:
        if self.running:
            return
        binary = find_mosquitto()
        workdir = self._ensure_workdir()
        if self._port == 0:
            self._port = server_port(self._host)
        elif _port_accepts(self._host, self._port):
            # Otherwise the readiness probe below would be answered by that other listener.
            raise BrokerStartError(
                f"{self._host}:{self._port} is already in use by another process; "
                "stop it or let MosquittoBroker pick a free port (port=0)"
            )

        config = workdir / "mosquitto.conf"
        # log_dest stderr (unbuffered) into our own file handle: mosquitto drops root privileges
        # to the "mosquitto" user and might not be allowed to open a file here,
        # and bind errors are printed before any log file would be opened.
        if self._persistent:
            # Saved on SIGTERM; `user` keeps mosquitto from switching to a user that cannot write here.
            persistence = (
                f"persistence true\npersistence_location {workdir}/\nautosave_interval 0\n"
                f"max_queued_messages 0\nuser {getpass.getuser()}\n"
            )
        else:
            persistence = "persistence false\n"
        config.write_text(
            f"listener {self._port} {self._host}\n"
            "allow_anonymous true\n"
            # Replies and acks are small: without this mosquitto holds each for Nagle (~40 ms).
            "set_tcp_nodelay true\n"
            f"{persistence}"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "log_type information\n"
            "connection_messages true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        )
        self._log_path = workdir / "mosquitto.log"
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(binary), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _port_accepts(self._host, self._port):
                log.debug("mosquitto pid %d listening on %s:%d", self._proc.pid, self._host, self._port)
                return
            time.sleep(0.02)

        exited = self._proc.poll()
        tail = self._log_tail()
        self.stop()
        why = f"exited with code {exited}" if exited is not None else f"did not accept TCP within {_START_TIMEOUT_S:.0f} s"
        raise BrokerStartError(
            f"mosquitto on {self._host}:{self._port} {why}; log tail ({self._log_path}):\n{tail}"
        )

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered.

        Simulates a hung broker or a network path that silently drops packets.
        """
        if not self.running:
            raise RuntimeError(f"{self!r} is not running; start() it before pause()")
        os.kill(self._proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.running:
            os.kill(self._proc.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
                proc.terminate()
                try:
                    proc.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("mosquitto pid %d ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait(timeout=_STOP_TIMEOUT_S)
            else:
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """Stop the broker and remove a working directory this object created."""
        self.stop()
        if self._owned_tmp is not None:
            self._owned_tmp.cleanup()
            self._owned_tmp = None
            self._workdir = None

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            self._owned_tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
            self._workdir = Path(self._owned_tmp.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        lines = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MosquittoBroker({self._host}:{self._port}, {state})"
