"""The sd_notify protocol: `KEY=value` lines in one datagram to the socket in $NOTIFY_SOCKET.

systemd reads READY=1, STATUS=..., WATCHDOG=1, RELOADING=1, STOPPING=1 and EXTEND_TIMEOUT_USEC=
from it (man sd_notify). With NotifyAccess=main only the main process may send, from any of its
threads. Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the agent runs the same
way from a shell.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """One unbound datagram socket to the service manager's notify socket.

    `address` is $NOTIFY_SOCKET's value: a path, or `@name` for the abstract namespace.
    """

    def __init__(self, address: str | None):
        self.address = address or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed_logged = False
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: object) -> bool:
        """Send one message; True if it went out. Never raises: the agent must not die of it."""
        if self._sock is None:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                self._sock.sendto(message, target)
            except OSError as exc:
                if not self._failed_logged:
                    log.error("sd_notify to %s failed: %s", self.address, exc)
                    self._failed_logged = True
                return False
        self._failed_logged = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 tell this reload from an older one.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def watchdog_timeout(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """The service's WatchdogSec= in seconds, or None when no watchdog is asked of this process.

    WATCHDOG_PID, when set, names the process the watchdog is meant for: a child that inherited
    the environment must not ping on its parent's behalf.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return seconds if seconds > 0 else None


def _one_line(value: object) -> str:
    # A newline would start a new KEY=value assignment.
    return " ".join(str(value).split("\n"))
