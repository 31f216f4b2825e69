"""The job process's side (`python -m agent.service.job_child`, started by agent/service/job_process.py):
rebuild the command and the daemon's settings from the request, run the job's work
(agent/service/work.py), relay its progress, and answer with its outcome. SIGTERM is the cancel flag.
"""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional

from agent.config import from_document
from agent.errors import AgentError
from agent.measure.isolate import Channel, WorkerCancelled, serve
from agent.mqtt.protocol import Command
from agent.service.replies import Outcome, failure
from agent.service.work import WORK

_log = logging.getLogger(__name__)


class ChildContext:
    """The job's `Context` inside the job process: its settings, the cancel flag SIGTERM raises, and
    progress as events on the channel (the daemon rate-limits them)."""

    def __init__(self, command: Command, settings: Any, channel: Channel) -> None:
        self.command, self.settings, self.channel = command, settings, channel
        self._stop = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        self._stop = True

    def cancelled(self) -> bool:
        """Whether the daemon asked this job to stop."""
        return self._stop

    def check_cancelled(self) -> None:
        """Raise `WorkerCancelled` when the daemon asked this job to stop."""
        if self._stop:
            raise WorkerCancelled(self.command.id)

    def progress(self, fraction: Optional[float], detail: Dict[str, Any]) -> None:
        """One progress event to the daemon."""
        self.channel.send("progress", fraction=fraction, detail=detail)


def run_job(payload: Dict[str, Any], channel: Channel) -> Dict[str, Any]:
    """The child's side: rebuild the command and settings, run the job's work, answer with its outcome."""
    command = Command.from_record(payload["command"])
    source = payload.get("source")
    settings = from_document(payload["settings"], {}, "the daemon's settings", Path(source) if source else None)
    try:
        outcome = WORK[command.cmd](command, ChildContext(command, settings, channel))
    except WorkerCancelled:
        outcome = Outcome("cancelled", code="cancelled", message="stopped by a cancel command")
    except AgentError as error:
        outcome = failure(error)
    except Exception as error:  # a bug fails the job with its name, and its traceback in the log
        _log.exception("job %s failed unexpectedly", command.id)
        outcome = Outcome("failed", code="internal_error", message=f"{type(error).__name__}: {error}")
    return asdict(outcome)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(serve(run_job))
