"""Structured logs. Every record carries the device id, and the line and event id when known.

Three outputs, chosen by `configure(fmt=...)`:

- `journal`: native journald fields over /run/systemd/journal/socket, so that
  `journalctl -u edge-agent LINE=inspect` or `journalctl EVENT_ID=0b9c...` find the records.
  Fields: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER, THREAD, CODE_FILE/LINE/FUNC,
  DEVICE_ID, LINE, EVENT_ID.
- `json`: one JSON object per line on stderr (ts, level, logger, msg, device_id, line,
  event_id, thread, exc).
- `text`: the classic one-line format, for a terminal.

`auto` picks journal when stderr is the journal (systemd sets $JOURNAL_STREAM), text on a
terminal, and json otherwise. The line comes from `extra={"line": ...}`, or else from the
thread's name: a line's stage threads are named `{line}-{stage}`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

FORMATS = ("auto", "journal", "json", "text")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "edge-agent"
_MAX_DATAGRAM = 60_000  # well under the socket's limit; longer messages are cut
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class ContextFilter(logging.Filter):
    """Adds device_id, line and event_id to every record passing through a handler."""

    def __init__(self, device_id: str, lines: Iterable[str]):
        super().__init__()
        self.device_id = device_id
        self.lines = frozenset(lines)

    def filter(self, record: logging.LogRecord) -> bool:
        record.device_id = self.device_id
        if not getattr(record, "line", None):
            prefix = record.threadName.rsplit("-", 1)[0] if record.threadName else ""
            record.line = prefix if prefix in self.lines else None
        if not hasattr(record, "event_id"):
            record.event_id = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "device_id": getattr(record, "device_id", None),
            "line": getattr(record, "line", None),
            "event_id": getattr(record, "event_id", None),
            "thread": record.threadName,
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        event_id = getattr(record, "event_id", None)
        return f"{text} [event {event_id}]" if event_id else text


class JournalHandler(logging.Handler):
    """journald's native protocol (systemd.journal-fields(7)): one datagram of fields per record.

    If the journal socket cannot take a record, it goes to `fallback` as a JSON line instead.
    """

    def __init__(self, socket_path: Path = JOURNAL_SOCKET, fallback: TextIO | None = None,
                 identifier: str = SYSLOG_IDENTIFIER):
        super().__init__()
        self.socket_path = str(socket_path)
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = logging.StreamHandler(fallback or sys.stderr)
        self._fallback.setFormatter(JsonFormatter())
        self._exc_formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._exc_formatter.formatException(record.exc_info)
            fields = {
                "MESSAGE": message,
                "PRIORITY": _PRIORITY.get(record.levelno, 6),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": record.name,
                "THREAD": record.threadName,
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
                "DEVICE_ID": getattr(record, "device_id", None),
                "LINE": getattr(record, "line", None),
                "EVENT_ID": getattr(record, "event_id", None),
            }
            self._sock.sendto(encode_journal_fields(fields), self.socket_path)
        except OSError:
            self._fallback.handle(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def encode_journal_fields(fields: Mapping[str, object]) -> bytes:
    """KEY=value lines; a value with a newline is sent as KEY\\n<u64 LE length><bytes>\\n."""
    out = bytearray()
    for key, value in fields.items():
        if value is None:
            continue
        data = str(value).encode("utf-8", "replace")[:_MAX_DATAGRAM]
        if b"\n" in data:
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def stderr_is_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """True when systemd connected stderr to the journal ($JOURNAL_STREAM is its device:inode)."""
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def configure(level: str, *, device_id: str, lines: Iterable[str], fmt: str = "auto",
              stream: TextIO | None = None, environ: Mapping[str, str] = os.environ,
              journal_socket: Path = JOURNAL_SOCKET) -> str:
    """(Re)configure the root logger's handler; returns the format chosen. Safe to call again
    after a reload (the device id or lines may have changed)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use one of {', '.join(FORMATS)})")
    stream = stream or sys.stderr
    if fmt == "auto":
        if stderr_is_journal(environ) and journal_socket.exists():
            fmt = "journal"
        else:
            fmt = "text" if stream.isatty() else "json"
    if fmt == "journal":
        handler: logging.Handler = JournalHandler(journal_socket, fallback=stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter(device_id, lines))
    handler._edge_agent = True  # type: ignore[attr-defined]  # ours to replace next time
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edge_agent", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    return fmt


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"
