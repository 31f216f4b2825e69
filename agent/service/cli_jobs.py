"""`profile` and `select` as daemon jobs: the CLI subcommand in a child process, its JSON the report.

Their command lines are the stable surface of those parts of edge-agent, so the daemon runs
`python -m agent.cli profile|select MODEL --json ...` with the command's arguments mapped to the
CLI's options, under a wall-clock limit and the workers' memory limit (RLIMIT_AS set on the child
right after it starts, before it can start a worker; workers inherit it). `cancel` interrupts the
child (SIGINT: its `run_worker` calls kill their workers on the way out), then kills it after a
second. Progress is reported at the start only: the child's own progress goes to its terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent import errors
from agent.errors import AgentError, WorkerError
from agent.measure.isolate import WorkerCancelled
from agent.mqtt.protocol import Command
from agent.service.lanes import JobContext
from agent.service.replies import Outcome

# protocol argument -> CLI option, for each command (lists are comma-joined, as the CLI takes them)
OPTIONS = {
    "profile": {"backend": "--backend", "precision": "--precision", "threads": "--threads", "batch": "--batch",
                "iterations": "--iterations", "time_limit": "--time-limit", "top": "--top"},
    "select": {"budget": "--budget", "time_limit": "--time-limit", "objective": "--objective"},
}
SELECT_GRACE_S = 120.0  # a selection's own limit covers its race, not loading and judging
# Shim (errors-tree): the failed code of each exit code above 1 that names one class's code (agent/errors.py).
_EXIT_CODES = {cls.exit_code: cls.code for cls in vars(errors).values() if isinstance(cls, type)
               and issubclass(cls, AgentError) and cls.exit_code > 1 and cls.code != "failed"}


def cli_arguments(command: Command, model_path: Path) -> List[str]:
    """The CLI's arguments for a validated `profile`/`select` command."""
    argv = [command.cmd, str(model_path), "--json"]
    for name, value in command.args.items():
        if name in OPTIONS[command.cmd]:
            argv += [OPTIONS[command.cmd][name], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        elif name == "options":
            for key, option in value.items():
                argv += ["--option", f"{key}={option}"]
        elif name == "shape":
            for key, dims in value.items():
                argv += ["--shape", f"{key}={','.join(map(str, dims))}"]
    return argv


def run_cli_job(command: Command, context: JobContext, model_path: Path, wall_s: float,
                memory_limit_mb: Optional[int]) -> Outcome:
    """Run the subcommand; its JSON output is the report."""
    context.progress(0.0, {"phase": "start"})
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryFile("w+b") as output, tempfile.TemporaryFile("w+b") as log:
        child = subprocess.Popen([sys.executable, "-m", "agent.cli", *cli_arguments(command, model_path)],
                                 stdin=subprocess.DEVNULL, stdout=output, stderr=log, env=env)
        if memory_limit_mb:
            size = memory_limit_mb * 1024 * 1024
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(child.pid, resource.RLIMIT_AS, (size, size))
        _wait(child, context, wall_s)
        output.seek(0)
        log.seek(0)
        stdout, stderr = output.read().decode("utf-8", "replace"), log.read().decode("utf-8", "replace")
    return _outcome(command.cmd, child.returncode, stdout, stderr)


def _wait(child: subprocess.Popen, context: JobContext, wall_s: float) -> None:
    deadline = time.monotonic() + wall_s
    while child.poll() is None:
        if context.cancelled() or time.monotonic() > deadline:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(1.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if context.cancelled():
                raise WorkerCancelled(context.command.id)
            raise WorkerError(f"edge-agent {context.command.cmd} did not finish within {wall_s:g} s and was stopped")
        time.sleep(0.1)


def _outcome(cmd: str, code: int, stdout: str, stderr: str) -> Outcome:
    try:
        report: Any = json.loads(stdout)
    except ValueError:
        report = None
    body: Optional[Dict[str, Any]] = {"reports": report} if isinstance(report, list) else report
    fine = code == 0 or (isinstance(report, list) and any(r.get("status") == "ok" for r in report))
    if fine and body is not None:
        return Outcome("done", body)
    message = next((line for line in reversed(stderr.splitlines()) if line.strip()), f"exit code {code}")
    return Outcome("failed", body, _EXIT_CODES.get(code, "failed"), message.replace("edge-agent: error: ", ""))
