"""The backends' statuses, probed in a child process: `python -m agent.backends.probe` imports every
runtime and prints `registry.statuses()` as JSON, so that a long-running process (the daemon) learns
which runtimes can run here without importing them, nor dying with one that crashes on import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import List

from agent import child_env
from agent.backends.base import BackendStatus
from agent.errors import WorkerError

PROBE_TIMEOUT_S = 120.0  # importing TensorRT and initialising CUDA on a small board takes a while


def probe_in_child(timeout_s: float = PROBE_TIMEOUT_S) -> List[BackendStatus]:
    """Every backend's status as a fresh interpreter finds it; `WorkerError` when that process fails."""
    try:
        done = subprocess.run([sys.executable, "-m", "agent.backends.probe"], capture_output=True, text=True,
                              timeout=timeout_s, env=child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WorkerError(f"probing the runtimes did not finish in {timeout_s:g} s") from None
    try:
        if done.returncode != 0:
            raise ValueError(f"exit code {done.returncode}")
        return [BackendStatus.from_dict(entry) for entry in json.loads(done.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise WorkerError(f"probing the runtimes failed ({error}): {done.stderr.strip()[-300:]}") from None


def main() -> None:
    """Print every backend's status, probed in this process, as one JSON line."""
    from agent.backends.registry import statuses

    print(json.dumps([status.to_dict() for status in statuses()]))


if __name__ == "__main__":
    main()
