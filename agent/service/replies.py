"""What the daemon says about a command: its events and its result, as outbox entries.

Each method returns the `OutboxMessage`s to write (in the same store transaction as the state change
they announce): one on the device's own topic, plus a copy to the command's MQTT 5 response topic
when it named one. Also the codes the daemon adds to the protocol's: rejections of well-formed
commands it cannot take now; a failed job's `code` is its error's (agent/errors.py, docs/daemon.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from agent.errors import AgentError
from agent.mqtt.outbox import OutboxMessage
from agent.mqtt.protocol import Command, Event, ReplyTo, Result, Telemetry, Topics, decode_message
from agent.service.store import Job

# Rejections the daemon adds: a full queue, a command this agent cannot run, a cancel of an unknown id,
# a command that arrived while the agent is stopping (it is not acknowledged, so the broker redelivers it).
DAEMON_REJECTIONS = ("queue_full", "unsupported", "unknown_target")
_EVENT_OF_STATE = {"queued": "accepted", "running": "started"}
Route = Optional[Union[Command, ReplyTo]]


@dataclass(frozen=True)
class Outcome:
    """How a job ended: `done` with a report, or failed/cancelled/interrupted with a code and message."""

    status: str
    report: Optional[Dict[str, Any]] = None
    code: Optional[str] = None
    message: Optional[str] = None


def failure(error: AgentError) -> Outcome:
    """The failed outcome of a job that raised `error`: its `code` (a protocol error's own)."""
    return Outcome("failed", code=error.code, message=str(error) or type(error).__name__)


class Replies:
    """Builds every message about commands for one device."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.device = topics.device_id

    def event(self, command: Command, event: str, **fields: Any) -> List[OutboxMessage]:
        """An event about an accepted command (accepted, started, progress)."""
        return self.topics.publications(Event(self.device, command.id, event, command.cmd, **fields), command)

    def rejection(self, command_id: Optional[str], cmd: Optional[str], code: str, message: str,
                  route: Route = None, duplicate: bool = False) -> List[OutboxMessage]:
        """The `rejected` event of a payload (command_id None when it could not be read)."""
        detail = {"duplicate": True} if duplicate else None
        return self.topics.publications(Event(self.device, command_id, "rejected", cmd, code=code, message=message,
                                              detail=detail), route)

    def end(self, command: Command, outcome: Outcome) -> List[OutboxMessage]:
        """The final event and the result of a job, in that order."""
        result = Result(self.device, command.id, command.cmd, outcome.status, outcome.report, outcome.code,
                        outcome.message)
        final = Event(self.device, command.id, outcome.status, command.cmd, code=outcome.code,
                      message=outcome.message)
        return self.topics.publications(final, command) + self.topics.publications(result, command)

    @staticmethod
    def stored_result(publications: List[OutboxMessage]) -> str:
        """The result payload among `end`'s messages, as the text the job store keeps for replays."""
        return next(m.payload for m in publications if m.kind == "result").decode("utf-8")

    def replay(self, command_id: str, cmd: Optional[str], route: Route, stored_outcome: str,
               job: Optional[Job]) -> List[OutboxMessage]:
        """The answer to a command id seen before, from the store: its rejection again, or its job's
        current state and, once finished, its stored result (copied to this message's response topic)."""
        if stored_outcome != "accepted":
            earlier = json.loads(stored_outcome)
            return self.rejection(command_id, cmd, earlier["code"], earlier["message"], route, duplicate=True)
        if job is None:  # forgotten after the idempotency window
            return self.topics.publications(Event(self.device, command_id, "accepted", cmd,
                                                  detail={"duplicate": True, "forgotten": True}), route)
        event = _EVENT_OF_STATE.get(job.state, job.state)
        messages = self.topics.publications(Event(self.device, command_id, event, job.cmd,
                                                  detail={"duplicate": True}), route)
        if job.result is not None:
            messages += self.topics.publications(decode_message(job.result.encode("utf-8")), route)
        return messages

    def telemetry(self, readings: Dict[str, Any], job: Optional[str]) -> List[OutboxMessage]:
        """A telemetry message (QoS 0, dropped first when the outbox is over its cap)."""
        return self.topics.publications(Telemetry(self.device, readings, job))


def rejection_outcome(code: str, message: str) -> str:
    """How a rejection is remembered under its command id (`Store.record_command`'s outcome)."""
    return json.dumps({"code": code, "message": message})
