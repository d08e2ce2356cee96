"""A real `edge-agent run` child process for fault tests: start it, SIGKILL it, SIGTERM it, read its log.

Each start writes its own log file (agent-1.log, agent-2.log, ...) in `workdir`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


class AgentProcess:
    def __init__(self, workdir: Path, config_path: Path | None = None):
        self.workdir = Path(workdir)
        self.config_path = config_path
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.started_at = 0.0  # time.monotonic() of the last start

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> subprocess.Popen:
        if self.running:
            raise RuntimeError("the agent is still running: kill() or stop() it first")
        if self.config_path is None:
            raise RuntimeError("no config_path to run the agent with")
        self.runs += 1
        self.started_at = time.monotonic()
        log = open(self.workdir / f"agent-{self.runs}.log", "wb")  # noqa: SIM115 - closed below, the child keeps it
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        return self.proc

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or a power cut of the process."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait for the exit status. An agent that ignores it is killed, and that is an error."""
        if self.proc is None:
            raise RuntimeError("the agent was never started")
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the agent ignored SIGTERM for {timeout_s} s; log:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / f"agent-{self.runs}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"
