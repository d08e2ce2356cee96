"""A network camera stream served by Debian's ffmpeg, which tests can kill, restart and hang.

    server = StreamServer(image=empty_belt, fps=15)   # or no image: ffmpeg's test pattern
    server = StreamServer(frames=folder, fps=5)       # or a clip: folder/00001.png, ... played once
    server.start()        # http://127.0.0.1:PORT/live.ts, MPEG-TS over HTTP
    server.kill()         # the camera dies (SIGKILL): the client's connection drops at once
    server.start()        # it comes back on the same port
    server.pause()        # the camera hangs (SIGSTOP): the connection stays open, no data
    server.resume()
    server.stop()

ffmpeg's HTTP server (`-listen 1`) serves one client and exits when that client leaves, so a
supervisor thread starts it again for as long as the server is meant to be up, like a camera
that accepts the next connection.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from .ports import server_port




class StreamServer:
    def __init__(self, image: np.ndarray | None = None, width: int = 640, height: int = 480, fps: float = 15,
                 noise: int = 0, port: int | None = None, workdir: Path | None = None, frames: Path | None = None):
        """image: a still shown as a live stream (with `noise` added per frame, like a sensor);
        frames: a folder of 00001.png, 00002.png, ... encoded once at `fps`, then played once per
        client, in real time, from its first frame (ffmpeg opens the input only when a client has
        connected): the client's frame n is the folder's frame n; neither: ffmpeg's moving test
        pattern."""
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("ffmpeg is not installed: apt-get install -y ffmpeg")
        self.port = port or server_port()
        self.fps = fps
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edge-stream-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if image is not None:
            self._still = self.workdir / "still.png"
            cv2.imwrite(str(self._still), image)
            height, width = image.shape[:2]
        else:
            self._still = None
        self._clip = None
        if frames is not None:
            first = cv2.imread(str(Path(frames) / "00001.png"))
            if first is None:
                raise FileNotFoundError(f"{Path(frames) / '00001.png'}: no first frame")
            height, width = first.shape[:2]
            self._clip = self.workdir / "clip.ts"
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-framerate", str(fps),
                            "-start_number", "1", "-i", str(Path(frames) / "%05d.png"),
                            "-an", "-c:v", "mpeg2video", "-q:v", "4", "-g", str(int(fps)), "-pix_fmt",
                            "yuv420p", "-f", "mpegts", str(self._clip)], check=True, timeout=600)
        self.width, self.height, self.noise = width, height, noise
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._up = threading.Event()
        self._quit = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.spawns = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.ts"

    def _command(self) -> list[str]:
        if self._still is not None:
            source = ["-loop", "1", "-framerate", str(self.fps), "-i", str(self._still)]
        elif self._clip is not None:
            return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(self._clip),
                    "-c", "copy", "-f", "mpegts", "-listen", "1", self.url]
        else:
            source = ["-f", "lavfi", "-i", f"testsrc2=size={self.width}x{self.height}:rate={self.fps}"]
        filters = ["-vf", f"noise=alls={self.noise}:allf=t"] if self.noise else []
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", *source, *filters,
            "-an", "-c:v", "mpeg2video", "-q:v", "4", "-g", str(int(self.fps)), "-pix_fmt", "yuv420p",
            "-f", "mpegts", "-listen", "1", self.url,
        ]

    # -- control ---------------------------------------------------------------------
    def start(self) -> None:
        """Up (again): listening within a moment, on the same port as before."""
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="stream-server", daemon=True)
            self._supervisor.start()
        self._up.set()
        self.wait_listening()

    def kill(self) -> None:
        """The camera dies: its process is killed and not started again until start()."""
        self._up.clear()
        self._signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """The camera hangs: the connection stays open, and nothing more arrives."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self._quit.set()
        self._up.clear()
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self._supervisor is not None:
            self._supervisor.join(5)
            self._supervisor = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait_listening(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._listening():
                return
            time.sleep(0.02)
        raise TimeoutError(f"ffmpeg is not listening on port {self.port}")

    # -- internals -------------------------------------------------------------------
    def _listening(self) -> bool:
        """Listening, or already serving: ffmpeg stops listening once it accepts its one client,
        and a client that retries every few ms (a camera reader reconnecting) can connect
        between two looks at the table."""
        # Read the kernel's table rather than connect: a probe connection would be the one
        # client ffmpeg serves. Local address :PORT in state LISTEN (0A) or ESTABLISHED (01);
        # the port lies below the ephemeral range, so no client socket has it as its own.
        port_hex = f"{self.port:04X}"
        try:
            with open("/proc/net/tcp") as table:
                return any(fields[1].endswith(f":{port_hex}") and fields[3] in ("0A", "01")
                           for fields in (line.split() for line in table.readlines()[1:]))
        except OSError:
            return False

    def _running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def _signal(self, signum: int) -> None:
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass

    def _supervise(self) -> None:
        while not self._quit.is_set():
            if not self._up.wait(0.1):
                continue
            log_path = self.workdir / "ffmpeg.log"
            with open(log_path, "ab") as log_file:
                process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=log_file)
            with self._lock:
                self._process = process
                self.spawns += 1
            started = time.monotonic()
            process.wait()
            with self._lock:
                self._process = None
            if time.monotonic() - started < 0.2:
                self._quit.wait(0.2)  # failing at once (port taken?): don't spin
