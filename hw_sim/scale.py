"""A simulated weighing scale on a pseudo-terminal, speaking MT-SICS or Toledo continuous output.

The agent opens `scale.link`, a symlink to the pty's device, exactly as it opens
/dev/serial/by-id/... on a device. A disconnect closes the pty (the agent's reads fail as
when a USB adapter is pulled); the scale comes back on a new pty behind the same link.

    with SimScale(tmp_path / "scale", protocol="mtsics") as scale:
        scale.place(250.0)                   # moving for settle_s, then stable at 250 g
        scale.inject("garbage", count=3)     # the next 3 messages are line noise
        scale.overload = True                # S + / out of range until cleared
        scale.moving = True                  # endless S D / motion bit
        scale.disconnect(down_s=1.0)

Faults for inject(): garbage, bad_checksum (Toledo; an MT-SICS reply with a damaged
number), error (ES/ET/EL), busy (S I), no_reply (MT-SICS: the request is ignored).
This module does not use the agent's parser: it writes the bytes from the protocol's spec.
"""

from __future__ import annotations

import errno
import os
import random
import select
import threading
import time
import tty
from pathlib import Path

FAULTS = ("garbage", "bad_checksum", "error", "busy", "no_reply")


def toledo_frame(weight_g: float, *, moving: bool = False, overload: bool = False, decimals: int = 1,
                 checksum: bool = True, corrupt_checksum: bool = False) -> bytes:
    """One Toledo continuous frame in grams: STX SWA SWB SWC weight(6) tare(6) CR [CKS]."""
    code = 2 + decimals  # 2: xxxxxx, 3: xxxxx.x, 4: xxxx.xx
    swa = 0x20 | 0x08 | code  # bit 5 always set; increment x1
    swb = 0x20 | (0x02 if weight_g < 0 else 0) | (0x04 if overload else 0) | (0x08 if moving else 0)
    swc = 0x20 | 0x01  # grams
    digits = min(999999, int(round(abs(weight_g) * 10 ** decimals)))
    frame = bytes([0x02, swa, swb, swc]) + f"{digits:06d}".encode() + b"000000" + b"\r"
    if checksum:
        cks = (-sum(frame)) & 0x7F
        frame += bytes([cks ^ 0x01 if corrupt_checksum else cks])
    return frame


def mtsics_reply(weight_g: float, *, moving: bool = False) -> bytes:
    return f"S {'D' if moving else 'S'} {weight_g:10.2f} g\r\n".encode()


class SimScale:
    def __init__(self, link: Path, protocol: str = "mtsics", *, settle_s: float = 0.4, rate_hz: float = 15.0,
                 checksum: bool = True, seed: int = 0):
        if protocol not in ("mtsics", "toledo"):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.link = Path(link)
        self.protocol = protocol
        self.settle_s = settle_s
        self.rate_hz = rate_hz
        self.checksum = checksum
        self.overload = False
        self.moving = False  # held in motion: endless S D
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._weight = 0.0
        self._settled_at = 0.0
        self._faults: list[str] = []
        self._fds: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.messages = 0

    # -- behaviour -------------------------------------------------------------------
    def place(self, weight_g: float, settle_s: float | None = None) -> None:
        """The weight on the pan becomes weight_g; it reads as moving for settle_s."""
        with self._lock:
            self._weight = weight_g
            self._settled_at = time.monotonic() + (self.settle_s if settle_s is None else settle_s)

    def inject(self, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown scale fault {fault!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend([fault] * count)

    def disconnect(self, down_s: float = 1.0) -> None:
        """The cable is pulled for down_s seconds; then the scale is back behind the same link."""
        self._close_pty()
        self._stop.wait(down_s)
        if not self._stop.is_set():
            self._open_pty()

    def _state(self) -> tuple[float, bool, str | None]:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            moving = self.moving or time.monotonic() < self._settled_at
            weight = self._weight
        if moving:
            weight += self._rng.uniform(-3.0, 3.0)
        return weight, moving, fault

    def _message(self) -> bytes | None:
        weight, moving, fault = self._state()
        if fault == "garbage":
            return bytes(self._rng.randrange(256) for _ in range(self._rng.randint(5, 40)))
        if self.protocol == "toledo":
            return toledo_frame(weight, moving=moving, overload=self.overload, checksum=self.checksum,
                                corrupt_checksum=fault == "bad_checksum")
        if fault == "no_reply":
            return None
        if fault == "error":
            return self._rng.choice([b"ES\r\n", b"ET\r\n", b"EL\r\n"])
        if fault == "busy":
            return b"S I\r\n"
        if fault == "bad_checksum":  # MT-SICS has no checksum: a reply damaged in transit
            return mtsics_reply(weight, moving=moving).replace(b".", b"#", 1)
        if self.overload:
            return b"S +\r\n"
        return mtsics_reply(weight, moving=moving)

    # -- the pty ---------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as on a wire
        os.set_blocking(master, False)  # a scale talks whether or not anyone listens
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)
        with self._lock:
            self._fds = (master, slave)

    def _close_pty(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, None
        if self.link.is_symlink():
            self.link.unlink()
        if fds:
            for fd in fds:
                os.close(fd)

    def _write(self, master: int, data: bytes) -> None:
        try:
            os.write(master, data)
            self.messages += 1
        except BlockingIOError:
            pass  # nobody reads: the bytes are lost, as on a wire
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise

    def _serve(self) -> None:
        pending = b""
        next_send = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                fds = self._fds
            if fds is None:
                self._stop.wait(0.02)
                continue
            master = fds[0]
            try:
                readable, _, _ = select.select([master], [], [], 0.02)
                data = os.read(master, 256) if readable else b""
            except (OSError, ValueError):
                self._stop.wait(0.02)  # closed under us by disconnect()
                continue
            if self.protocol == "toledo":
                if time.monotonic() >= next_send:
                    next_send += 1.0 / self.rate_hz
                    if next_send < time.monotonic():
                        next_send = time.monotonic() + 1.0 / self.rate_hz
                    self._write(master, self._message())
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command = line.strip().upper()
                self.requests += 1
                if command in (b"SI", b"S"):
                    reply = self._message()
                    if reply is not None:
                        self._write(master, reply)
                elif command:
                    self._write(master, b"ES\r\n")

    def start(self) -> None:
        self._open_pty()
        self._thread = threading.Thread(target=self._serve, name=f"sim-scale-{self.protocol}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self._close_pty()

    def __enter__(self) -> SimScale:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
