"""What each command does in the daemon: `ping` and `models` answer at once; every other command is a
job run in the job process (agent/service/job_process.py, the work in agent/service/work.py), so the
daemon itself never imports numpy, a model reader or a runtime. `info` is run once and remembered.
A handler takes the validated `Command` and a `JobContext` and returns an `Outcome` (or raises an
`AgentError`, which fails the job with its code).
"""

from __future__ import annotations

from typing import Dict, Optional

from agent import __version__
from agent.mqtt.protocol import Command
from agent.service.job_process import run_in_job_process
from agent.service.lanes import Handler, JobContext
from agent.service.model_store import list_models
from agent.service.replies import Outcome

JOBS = ("deploy", "bench", "eval", "profile", "select")


class Handlers:
    """The daemon's command handlers: `ping` and `models` here, the jobs in the job process."""

    def __init__(self) -> None:
        self._info: Optional[Outcome] = None  # only the quick lane runs `info`: one thread

    def table(self) -> Dict[str, Handler]:
        """Command name -> handler, for the lanes."""
        return {"ping": self.ping, "models": self.models, "info": self.info,
                **{name: run_in_job_process for name in JOBS}}

    def ping(self, command: Command, context: JobContext) -> Outcome:
        """Alive: the agent's version."""
        return Outcome("done", {"pong": True, "version": __version__})

    def models(self, command: Command, context: JobContext) -> Outcome:
        """What the model store holds."""
        store = context.settings.model_dir
        return Outcome("done", {"model_dir": str(store), "models": list_models(store)})

    def info(self, command: Command, context: JobContext) -> Outcome:
        """The board and its runtimes (`edge-agent info --json`), found once by the job process; a failed
        probe is tried again at the next `info`."""
        if self._info is None:
            outcome = run_in_job_process(command, context)
            if outcome.status != "done":
                return outcome
            self._info = outcome
        return self._info
