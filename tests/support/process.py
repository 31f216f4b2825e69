"""What the tests' service processes share (`AgentProcess`, `CoordinatorProcess`): whether one runs, a clean
stop with SIGTERM, a kill, and its log."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Optional


class ServiceProcess:
    """One long-running `edge-agent` process whose output goes to `log_path`."""

    name = "the service"
    process: Optional[subprocess.Popen] = None
    log_path: Path

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        if not self.alive():
            return self.process.returncode if self.process else 0
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Everything the process logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
