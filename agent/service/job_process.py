"""The job process: every job but `ping` and `models` runs in a child of the daemon.

`run_in_job_process` starts `python -m agent.service.job_child` (agent.measure.isolate: its own
process group, its output read as JSON lines), hands it the command and the daemon's settings as JSON,
relays its progress as the job's progress events, and returns the outcome it answers with. The child
runs the job's work (agent/service/work.py: the same job functions the CLI calls), with one worker
process per configuration as ever. Why a child: the daemon never imports numpy, a model reader or a
runtime, so after any job it is back at its idle memory (what a 1 GB board can spare), and a bug or
crash in job-level code costs that job only. `cancel` (or the agent stopping) sends the child SIGTERM:
its cancel flag stops the running worker and a deploy cleans its work folder; whatever is left after
CANCEL_GRACE_S is killed. The child and its workers die with the daemon (isolate.die_with_parent); as
a second guard, the running job process's pid is recorded in the state folder, and a daemon that
starts after a crash kills a job process still running from before (`kill_stale`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Dict

from agent.config import to_document
from agent.measure.isolate import run_child
from agent.mqtt.protocol import Command
from agent.service.lanes import JobContext
from agent.service.replies import Outcome

MODULE = "agent.service.job_child"
CANCEL_GRACE_S = 5.0
# A backstop only: each worker has its time limit, a profile and a select their wall-clock limits.
JOB_LIMIT_S = 7 * 86400.0
PID_FILE = "job-process.pid"  # in the state folder while a job process runs


def run_in_job_process(command: Command, context: JobContext) -> Outcome:
    """Run `command`'s job in a fresh job process; its outcome (a failure carries the error's own code)."""
    settings = context.settings
    payload = {"command": command.to_record(), "settings": to_document(settings),
               "source": None if settings.source is None else str(settings.source)}

    def relay(event: Dict[str, Any]) -> None:
        context.progress(event.get("fraction"), event.get("detail") or {})

    record = settings.storage.state_dir / PID_FILE
    try:
        answer = run_child(MODULE, payload, JOB_LIMIT_S, relay, context.cancelled, CANCEL_GRACE_S,
                           what="job process", on_start=lambda pid: record.write_text(f"{pid}\n"))
    finally:
        with contextlib.suppress(OSError):
            record.unlink()
    return Outcome(answer["status"], answer.get("report"), answer.get("code"), answer.get("message"))


def kill_stale(state_dir: Path) -> bool:
    """Kill the process group of a job process a crashed daemon left running (its pid recorded in
    `state_dir`, its command line still the job process's); True when there was one."""
    record = state_dir / PID_FILE
    try:
        pid = int(record.read_text().split()[0])
        running = MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        running = False
    if running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        record.unlink()
    return running
