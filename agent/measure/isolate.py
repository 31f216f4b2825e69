"""Runs one measurement in a worker subprocess, under a wall-clock limit.

A native runtime that segfaults, aborts, hangs or leaks must cost one measurement, not the caller:
the worker runs in its own process group, is killed when its time is up, and any way it can end
without a result becomes a `WorkerError` that names the signal or exit code and quotes the last
lines it printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent import errors
from agent.measure.messages import WorkerRequest, WorkerResult

ProgressHandler = Callable[[Dict[str, Any]], None]
_TAIL_LINES = 6
_EXIT_GRACE_S = 5.0


class WorkerCancelled(Exception):
    """The caller's `should_cancel` said stop: the worker was killed. Deliberately not an `AgentError`,
    so code that turns worker errors into failed reports lets it through to whoever cancelled."""


def run_worker(request: WorkerRequest, time_limit_s: float, on_progress: Optional[ProgressHandler] = None,
               should_cancel: Optional[Callable[[], bool]] = None) -> WorkerResult:
    """Send `request` to a fresh worker and return its result, or raise the error it reported or met.
    `should_cancel` is polled about every 0.1 s; when it returns True the worker's process group is
    killed and `WorkerCancelled` raised."""
    with tempfile.TemporaryFile("w+b") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.measure.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, start_new_session=True, env=_worker_env())
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(request.to_dict()).encode())
            process.stdin.close()
        try:
            events, timed_out = _read_events(process, time.monotonic() + time_limit_s, on_progress, should_cancel)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0 if timed_out else _EXIT_GRACE_S)  # a timed-out worker is killed at once
        finally:
            _kill_group(process)
            process.wait()
            process.stdout.close()
        final = events[-1] if events and events[-1]["event"] in ("result", "error") else None
        if final is None:
            what = (f"worker timed out after {time_limit_s:g} s and was killed" if timed_out
                    else _death_cause(process.returncode))
            if request.memory_limit_mb:
                what += f" (it ran under a {request.memory_limit_mb} MB memory limit)"
            tail = _tail(stderr)
            raise errors.WorkerError(what + (f"; its last output:\n{tail}" if tail else ""))
        if final["event"] == "error":
            raise errors.error_from(final["type"], final["message"])
        return WorkerResult.from_dict(final["result"])


def _worker_env() -> Dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _read_events(process: subprocess.Popen, deadline: float, on_progress: Optional[ProgressHandler],
                 should_cancel: Optional[Callable[[], bool]] = None) -> Tuple[List[Dict[str, Any]], bool]:
    """Read JSON lines until the worker closes its channel or the deadline passes (then True)."""
    events: List[Dict[str, Any]] = []
    buffer = b""
    fd = process.stdout.fileno()  # type: ignore[union-attr]
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return events, True
            if should_cancel is not None and should_cancel():
                raise WorkerCancelled("cancelled")
            if not selector.select(timeout=min(remaining, 0.5 if should_cancel is None else 0.1)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return events, False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = _parse(line)
                if event is None:
                    continue
                events.append(event)
                if event["event"] == "progress" and on_progress is not None:
                    on_progress(event)


def _parse(line: bytes) -> Optional[Dict[str, Any]]:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _tail(stderr: Any) -> str:
    stderr.seek(0)
    lines = [line for line in stderr.read().decode(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-_TAIL_LINES:])


def _death_cause(returncode: Optional[int]) -> str:
    if returncode is not None and returncode < 0:
        return f"worker crashed with signal {signal.Signals(-returncode).name}"
    return f"worker exited with code {returncode} without a result"

