"""Lanes: threads that take queued jobs from the store, one at a time each, and run them.

The daemon runs two: the quick lane (`ping`, `info`, `models`) and the job lane (`deploy`, `bench`,
`eval`, ...), each claiming only the priorities of its range, so a cheap command never waits behind
a benchmark and no two measurements ever share the board. A lane announces `started`, runs the
command's handler with a `JobContext` (progress events, the cancel flag), and ends the job with its
final event and result in one store transaction. Stopping a lane (SIGTERM) lets the running job
finish within a grace period, then stops it and puts it back in the queue: measurements have no
side effects, so it runs again from the start when the agent is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple

from agent.errors import AgentError
from agent.measure.isolate import WorkerCancelled
from agent.mqtt.protocol import Command
from agent.service.replies import Outcome, Replies, failure
from agent.service.store import Job, Store

_log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0  # at most one progress event a second, besides each change of phase
QUICK = (1, 4)  # priorities of the quick lane (cancel, priority 0, is answered by the intake itself)
JOBS = (5, None)
IDLE_POLL_S = 5.0


class JobContext:
    """What a running handler may use: the settings, progress reporting and the cancel flag."""

    def __init__(self, lane: Lane, command: Command) -> None:
        self.lane, self.command = lane, command
        self.settings: Any = lane.settings()
        self._last_progress = 0.0
        self._last_phase: Optional[str] = None

    def cancelled(self) -> bool:
        """Whether the job should stop now (a `cancel` command, or the agent stopping)."""
        return self.command.id in self.lane.cancelled or self.lane.aborting.is_set()

    def check_cancelled(self) -> None:
        """Raise `WorkerCancelled` when the job should stop (for handlers that loop themselves)."""
        if self.cancelled():
            raise WorkerCancelled(self.command.id)

    def progress(self, fraction: Optional[float], detail: Dict[str, Any]) -> None:
        """Publish a progress event (rate-limited; a new `phase` always goes out)."""
        now = time.monotonic()
        phase = detail.get("phase")
        if phase == self._last_phase and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress, self._last_phase = now, phase
        clipped = None if fraction is None else round(min(1.0, max(0.0, fraction)), 4)
        self.lane.store.outbox_put_all(self.lane.replies.event(self.command, "progress", progress=clipped,
                                                               detail=detail))
        self.lane.on_outbox()


Handler = Callable[[Command, JobContext], Outcome]


class Lane:
    """One thread running the queued jobs whose priority is in [lowest, highest], oldest first."""

    def __init__(self, name: str, priorities: Tuple[int, Optional[int]], store: Store, replies: Replies,
                 handlers: Dict[str, Handler], settings: Callable[[], Any], on_outbox: Callable[[], None]) -> None:
        self.name, self.store, self.replies, self.handlers = name, store, replies, handlers
        self.lowest, self.highest = priorities
        self.settings, self.on_outbox = settings, on_outbox
        self.cancelled: Set[str] = set()
        self.aborting = threading.Event()
        self.current: Optional[str] = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-lane", daemon=True)

    def start(self) -> None:
        """Start taking jobs (also those queued before a restart)."""
        self._thread.start()

    def wake(self) -> None:
        """A job was queued for this lane."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop this job if it is running (within ~0.1 s for a measurement)."""
        self.cancelled.add(job_id)

    def stop(self, grace_s: float) -> None:
        """Take no more jobs; give the running one `grace_s` to finish, then stop it and requeue it."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(grace_s)
        if self._thread.is_alive():
            _log.warning("%s lane: stopping job %s, it goes back to the queue", self.name, self.current)
            self.aborting.set()
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.next_job(self.lowest, self.highest)
            except AgentError:
                _log.exception("%s lane: cannot read the queue", self.name)
                job = None
            if job is None:
                self._wake.wait(IDLE_POLL_S)  # woken at once by `wake`; the poll is a safety net
                self._wake.clear()
                continue
            self.current = job.id
            try:
                self._execute(job)
            finally:
                self.current = None
                self.cancelled.clear()  # a cancelled job that was not running here is final in the store

    def _execute(self, job: Job) -> None:
        command = Command.from_record(job.command)
        if not self.store.set_state(job.id, "running", publish=self.replies.event(command, "started")):
            return  # cancelled between being taken from the queue and starting: it is final already
        self.on_outbox()
        try:
            outcome = self.handlers[command.cmd](command, JobContext(self, command))
        except WorkerCancelled:
            if self.aborting.is_set():
                self.store.set_state(job.id, "queued")
                return
            outcome = Outcome("cancelled", code="cancelled", message="stopped by a cancel command")
        except AgentError as error:
            outcome = failure(error)
        except Exception as error:  # a bug must fail the job, not kill the lane
            _log.exception("%s lane: job %s failed unexpectedly", self.name, job.id)
            outcome = Outcome("failed", code="internal_error", message=f"{type(error).__name__}: {error}")
        publications = self.replies.end(command, outcome)
        self.store.finish(job.id, outcome.status, Replies.stored_result(publications), publish=publications)
        self.on_outbox()
