"""The daemon's second guard after a crash: a job process still running from before is found by the pid
recorded in the state folder, checked by its command line, and killed; anything else is left alone.
Real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from agent import child_env
from agent.service.job_process import MODULE, PID_FILE, kill_stale


def _gone(process: subprocess.Popen, seconds: float = 5.0) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_job_process_left_running_is_killed(tmp_path: Path) -> None:
    stale = subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE, env=child_env(),
                             start_new_session=True)  # waits for its request on stdin: alive, as after a crash
    try:
        time.sleep(0.5)
        (tmp_path / PID_FILE).write_text(f"{stale.pid}\n")
        assert kill_stale(tmp_path) and _gone(stale)
        assert not (tmp_path / PID_FILE).exists()
    finally:
        stale.kill()
        stale.wait()


def test_a_recorded_pid_that_is_no_job_process_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (tmp_path / PID_FILE).write_text(f"{other.pid}\n")
        assert not kill_stale(tmp_path) and other.poll() is None
        assert not kill_stale(tmp_path)  # nothing recorded any more
        (tmp_path / PID_FILE).write_text("garbage\n")
        assert not kill_stale(tmp_path)
    finally:
        other.kill()
        other.wait()
