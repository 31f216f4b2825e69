"""Native and heavy work in a child process, under a wall-clock limit: both sides of the pipe.

A native runtime that segfaults, aborts, hangs or leaks must cost one measurement, and a job one job,
never the process that started it. `run_child` starts `python -m MODULE` in its own process group,
sends it one JSON request on stdin and reads JSON lines from it (progress events, then one `result`
or `error`); when its time is up, or `should_cancel` says so, the group is stopped. Any way the child
can end without a result becomes a `WorkerError` that names the signal or exit code and quotes the
last lines it printed. `serve` is the child's side: it keeps a copy of stdout as the channel and sends
fd 1 to stderr (a runtime's own prints cannot corrupt the protocol), and asks the kernel to kill the
child when its parent dies, so no worker outlives a crashed agent.

This module needs the standard library alone: the daemon imports it without numpy.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from agent import child_env, errors
from agent.measure.runtime_errors import describe

ProgressHandler = Callable[[Dict[str, Any]], None]
PARENT_ENV = "EDGE_AGENT_PARENT_PID"
NO_PDEATHSIG_ENV = "EDGE_AGENT_NO_PDEATHSIG"
_TAIL_LINES = 6
_EXIT_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


class WorkerCancelled(Exception):
    """The caller's `should_cancel` said stop: the child was stopped. Deliberately not an `AgentError`,
    so code that turns worker errors into failed reports lets it through to whoever cancelled."""


def run_child(module: str, request: Dict[str, Any], time_limit_s: float, on_progress: Optional[ProgressHandler] = None,
              should_cancel: Optional[Callable[[], bool]] = None, cancel_grace_s: float = 0.0,
              what: str = "worker", note: str = "",
              on_start: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Send `request` to a fresh `python -m module` and return its result, or raise the error it reported
    (as its own class) or met (`WorkerError`; `note` is added to the message). `should_cancel` is polled
    about every 0.1 s; when it says stop, the child gets SIGTERM and `cancel_grace_s` to end (0: SIGKILL at
    once), its process group is killed, and `WorkerCancelled` raised. `on_start` gets the child's pid."""
    with tempfile.TemporaryFile("w+b") as stderr:
        process = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=stderr, start_new_session=True,
                                   env=child_env(**{PARENT_ENV: str(os.getpid())}))
        assert process.stdin is not None and process.stdout is not None
        if on_start is not None:
            on_start(process.pid)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(request).encode())
            process.stdin.close()
        try:
            events, timed_out = _read_events(process, time.monotonic() + time_limit_s, on_progress, should_cancel)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0 if timed_out else _EXIT_GRACE_S)  # a timed-out child is killed at once
        except WorkerCancelled:
            _stop(process, cancel_grace_s)
            raise
        finally:
            _kill_group(process)
            process.wait()
            process.stdout.close()
        final = events[-1] if events and events[-1]["event"] in ("result", "error") else None
        if final is None:
            crashed = not timed_out and process.returncode is not None and process.returncode < 0
            cause = (f"{what} timed out after {time_limit_s:g} s and was killed" if timed_out
                     else _death_cause(what, process.returncode))
            tail = _tail(stderr)
            kind = errors.WorkerCrashedError if crashed else errors.WorkerError
            raise kind(cause + note + (f"; its last output:\n{tail}" if tail else ""))
        if final["event"] == "error":
            raise errors.error_from(final["type"], final["message"])
        return dict(final["result"])


class Channel:
    """The child's JSON lines to its parent, on a copy of the original stdout."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, event: str, **fields: Any) -> None:
        """One event (`progress`, or the final `result`/`error`) as one line."""
        fields["event"] = event
        self.stream.write(json.dumps(fields) + "\n")
        self.stream.flush()


def serve(run: Callable[[Dict[str, Any], Channel], Dict[str, Any]]) -> int:
    """The child's main: read the request, `run` it, answer with its result or the error it raised (an
    `AgentError` as itself; anything else, a runtime's own exception, as a `WorkerError` line)."""
    die_with_parent()
    channel = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)  # native runtimes print to fd 1: keep those lines out of the protocol
    sys.stdout = sys.stderr
    try:
        channel.send("result", result=run(json.loads(sys.stdin.read()), channel))
    except errors.AgentError as exc:
        channel.send("error", type=type(exc).__name__, message=str(exc))
    except Exception as exc:  # a runtime's own exception type: reported, never a traceback on the parent
        channel.send("error", type="WorkerError", message=describe(exc))
    return 0


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere a
    thread that watches the parent id), and exit now if the parent is already gone. The signal follows
    the parent *thread* that started this process: every parent here starts its children from a thread
    that outlives them."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    armed = False
    if not os.environ.get(NO_PDEATHSIG_ENV):  # the test suite's switch, to check the fallback too
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):  # not Linux
            armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:
        os._exit(70)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(70)


def _read_events(process: subprocess.Popen, deadline: float, on_progress: Optional[ProgressHandler],
                 should_cancel: Optional[Callable[[], bool]] = None) -> Tuple[List[Dict[str, Any]], bool]:
    """Read JSON lines until the child closes its channel or the deadline passes (then True)."""
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


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then up to `grace_s` for the child to stop its own children and end."""
    if grace_s > 0 and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _tail(stderr: Any) -> str:
    stderr.seek(0)
    lines = [line for line in stderr.read().decode(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-_TAIL_LINES:])


def _death_cause(what: str, returncode: Optional[int]) -> str:
    if returncode is not None and returncode < 0:
        return f"{what} crashed with signal {signal.Signals(-returncode).name}"
    return f"{what} exited with code {returncode} without a result"
