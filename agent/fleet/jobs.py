"""Fleet jobs: one command sent to a board, a group or every board, with a state per board.

`create_job` checks the command as a board would (agent.mqtt.protocol.parse_command), resolves the target
to the boards the store knows (a device id, `group:NAME`, `all`) and writes one `FleetJob` with a
`FleetJobBoard` per board: `sent` for a board that is online (the service publishes the command to its
own topic), and for one that is offline `pending` (config `jobs.offline = "wait"`: it is sent when the
board's status says online again) or `offline` at once (`"fail"`). `track` moves a board's state from
its events (accepted, running with progress, rejected) and its result (done, failed, cancelled,
interrupted) in ingest's transaction, and returns the pending commands a board that came back online is
owed; `expire` ends what the deadline overtook (`timed_out`, or `offline` for a board that never came
back). A late result still lands in its job. Everything is in the store, so a restarted coordinator
carries on (docs/coordinator.md, "Fleet jobs").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from agent.errors import JobError, ProtocolError
from agent.fleet.settings import JobSettings
from agent.fleet.store.database import Store
from agent.fleet.store.models import Board, FleetJob, FleetJobBoard
from agent.mqtt.protocol import (
    Command,
    Event,
    Message,
    Result,
    Status,
    encode_command,
    new_command_id,
    parse_command,
    target_topic,
)

FINAL_STATES = ("done", "failed", "rejected", "cancelled", "interrupted", "timed_out", "offline")
BOARD_STATES = ("pending", "sent", "accepted", "running") + FINAL_STATES
# The events that move a board's state. The end of a job (done, failed, ...) is taken from its result, which
# carries what the job made and always follows its final event, so a finished board has its result linked.
_EVENT_STATES = {"accepted": "accepted", "started": "running", "progress": "running", "rejected": "rejected"}


@dataclass(frozen=True)
class JobBoardView:
    """One board's state in a fleet job."""

    device_id: str
    state: str
    progress: Optional[float]
    detail: Optional[str]
    updated_at: datetime
    result_id: Optional[int]


@dataclass(frozen=True)
class JobView:
    """A fleet job as the API and the CLI show it."""

    id: str
    target: str
    cmd: str
    args: Dict[str, Any]
    created_at: datetime
    created_by: Optional[str]
    deadline: datetime
    offline: str
    boards: Tuple[JobBoardView, ...]

    @property
    def counts(self) -> Dict[str, int]:
        """How many boards are in each state."""
        counts: Dict[str, int] = {}
        for board in self.boards:
            counts[board.state] = counts.get(board.state, 0) + 1
        return counts

    @property
    def finished(self) -> bool:
        """Every board's state is final."""
        return all(board.state in FINAL_STATES for board in self.boards)

    def to_dict(self) -> Dict[str, Any]:
        """The job as JSON-able values, times in ISO 8601 UTC with a Z."""
        return {"id": self.id, "target": self.target, "cmd": self.cmd, "args": self.args,
                "created_at": iso(self.created_at), "created_by": self.created_by, "deadline": iso(self.deadline),
                "offline": self.offline, "finished": self.finished, "counts": self.counts,
                "boards": [{"device_id": board.device_id, "state": board.state, "progress": board.progress,
                            "detail": board.detail, "updated_at": iso(board.updated_at),
                            "result_id": board.result_id} for board in self.boards]}


@dataclass(frozen=True)
class Send:
    """A command the service is to publish to one board's own command topic."""

    device_id: str
    topic: str
    payload: bytes


def iso(moment: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with milliseconds and a Z, like the boards' `ts`."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_job(store: Store, target: str, cmd: str, args: Dict[str, Any], settings: JobSettings, root: str,
               now: datetime, created_by: Optional[str] = None) -> Tuple[JobView, List[Send]]:
    """Make a fleet job for `target` and say which boards to send it to now; `JobError` when the command
    is malformed or the target names no known board."""
    command = _checked_command(cmd, args)
    payload = encode_command(command)
    with store.session() as session:
        boards = _target_boards(session, target)
        job = FleetJob(id=command.id, target=target, cmd=command.cmd, args=command.args, created_at=now,
                       created_by=created_by, deadline=now + timedelta(seconds=settings.timeout_s),
                       offline=settings.offline)
        sends = []
        for board in boards:
            online = board.state == "online"
            state = "sent" if online else ("pending" if settings.offline == "wait" else "offline")
            detail = None if online else ("offline: sent when it is back" if state == "pending" else
                                          "offline when the job was made")
            job.boards.append(FleetJobBoard(device_id=board.device_id, state=state, detail=detail, updated_at=now))
            if online:
                sends.append(Send(board.device_id, target_topic(board.device_id, root), payload))
        session.add(job)
        session.flush()
        return _view(job), sends


def check_job(store: Store, target: str, cmd: str, args: Dict[str, Any]) -> List[str]:
    """The device ids a job would go to, once its command is checked; `JobError` as `create_job` would raise
    it (what the dashboard shows before asking to confirm a command to many boards)."""
    _checked_command(cmd, args)
    with store.session() as session:
        return [board.device_id for board in _target_boards(session, target)]


def _checked_command(cmd: str, args: Dict[str, Any]) -> Command:
    """The command as a board will parse it, with a fresh id: a bad one fails here, not on every board."""
    try:
        return parse_command(encode_command(Command(new_command_id(), cmd, args)))
    except ProtocolError as error:
        raise JobError(error.code, error.message) from None


def _target_boards(session: Session, target: str) -> List[Board]:
    """The known boards a target names: one device, the members of a group, or all of them."""
    if target == "all":
        boards = list(session.scalars(select(Board).order_by(Board.device_id)))
        if not boards:
            raise JobError("no_boards", "no board has reported to this coordinator yet")
        return boards
    if target.startswith("group:"):
        group = target[len("group:"):]
        boards = [board for board in session.scalars(select(Board).order_by(Board.device_id))
                  if group in (board.groups or [])]
        if not boards:
            raise JobError("no_boards", f"no known board is in group {group!r}")
        return boards
    board = session.get(Board, target)
    if board is None:
        raise JobError("unknown_board", f"unknown board {target[:80]!r}")
    return [board]


def track(session: Session, messages: Sequence[Tuple[Message, Optional[int]]], root: str,
          now: datetime) -> List[List[Send]]:
    """Move the fleet-job states of boards from their messages, in order (in ingest's transaction; each with the
    id of the result it stored, if any); per message, the pending commands to send a board whose status says
    online again."""
    named = [(message.command_id, message.device) for message, _ in messages
             if isinstance(message, (Event, Result)) and message.command_id is not None]
    rows: Dict[Tuple[str, str], FleetJobBoard] = {}
    if named:
        # Locked and read afresh: another coordinator may have moved these boards' states a moment ago.
        query = (select(FleetJobBoard)
                 .where(FleetJobBoard.job_id.in_(sorted({job for job, _ in named})),
                        FleetJobBoard.device_id.in_(sorted({device for _, device in named})))
                 .order_by(FleetJobBoard.job_id, FleetJobBoard.device_id).with_for_update()
                 .execution_options(populate_existing=True))
        rows = {(row.job_id, row.device_id): row for row in session.scalars(query)}
    sends: List[List[Send]] = []
    for message, result_id in messages:
        sends.append([])
        if isinstance(message, Status) and message.state == "online":
            sends[-1] = _release(session, message.device, root, now)
        elif isinstance(message, (Event, Result)) and message.command_id is not None:
            row = rows.get((message.command_id, message.device))
            if row is not None:
                _advance(row, message, result_id, now)
    return sends


def _advance(row: FleetJobBoard, message: Any, result_id: Optional[int], now: datetime) -> None:
    """A board's state after an event or its result: a result always lands (even after a timeout); an
    event never moves a final state back."""
    if isinstance(message, Result):
        row.state, row.progress, row.result_id = message.status, None, result_id
        row.detail = f"{message.code}: {message.message}" if message.code else None
    else:
        state = _EVENT_STATES.get(message.event)
        if state is None or row.state in FINAL_STATES and row.state != "timed_out":
            return
        row.state = state
        if isinstance(message.progress, (int, float)) and 0 <= message.progress <= 1:
            row.progress = float(message.progress)
        if message.event == "rejected":
            row.detail = f"{message.code}: {message.message}"
    row.updated_at = now


def _release(session: Session, device_id: str, root: str, now: datetime) -> List[Send]:
    """The pending jobs of a board that came back, marked sent; their commands to publish."""
    query = (select(FleetJobBoard).join(FleetJob)
             .where(FleetJobBoard.device_id == device_id, FleetJobBoard.state == "pending", FleetJob.deadline > now)
             .options(selectinload(FleetJobBoard.job)))
    sends = []
    for row in session.scalars(query):
        job = row.job
        row.state, row.detail, row.updated_at = "sent", "sent when it came back online", now
        payload = encode_command(Command(job.id, job.cmd, job.args))
        sends.append(Send(device_id, target_topic(device_id, root), payload))
    return sends


def expire(store: Store, now: datetime) -> int:
    """End the board states a job's deadline overtook: `offline` for a board that never came back,
    `timed_out` for one that took the command and did not finish; how many changed."""
    query = (select(FleetJobBoard).join(FleetJob)
             .where(FleetJob.deadline <= now, FleetJobBoard.state.in_(("pending", "sent", "accepted", "running"))))
    with store.session() as session:
        rows = list(session.scalars(query))
        for row in rows:
            never_back = row.state == "pending"
            row.state = "offline" if never_back else "timed_out"
            row.detail = "never came back online before the deadline" if never_back else "no result before the deadline"
            row.updated_at = now
        return len(rows)


def list_jobs(store: Store, limit: int = 100) -> List[JobView]:
    """The newest fleet jobs first, with their boards' states."""
    query = (select(FleetJob).order_by(FleetJob.created_at.desc(), FleetJob.id).limit(limit)
             .options(selectinload(FleetJob.boards)))
    with store.session() as session:
        return [_view(job) for job in session.scalars(query)]


def get_job(store: Store, job_id: str) -> Optional[JobView]:
    """One fleet job by id, or None."""
    with store.session() as session:
        job = session.get(FleetJob, job_id, options=[selectinload(FleetJob.boards)])
        return None if job is None else _view(job)


def _view(job: FleetJob) -> JobView:
    boards = tuple(JobBoardView(row.device_id, row.state, row.progress, row.detail, row.updated_at, row.result_id)
                   for row in sorted(job.boards, key=lambda row: row.device_id))
    return JobView(job.id, job.target, job.cmd, dict(job.args or {}), job.created_at, job.created_by, job.deadline,
                   job.offline, boards)
