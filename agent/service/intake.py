"""How a command message is taken in: validated, de-duplicated, recorded, and accepted or rejected.

Runs on the daemon's main loop, one message at a time, before the message is acknowledged to the
broker. Every command gets exactly one `accepted` or `rejected` event, written to the outbox in the
same transaction that records its id (a rejection whose id could not be read is only published).
A command id seen before is answered from the store and never queued again. Accepted jobs are
queued for their lane; `cancel` is carried out here at once, so it never waits behind anything.
Rejections that depend on the moment (`queue_full`, a cancel of an id not seen yet) are not
remembered: the same command may be sent again later.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional

from agent.errors import ProtocolError
from agent.mqtt.protocol import Command, Limits, parse_command, reply_to
from agent.service.lanes import Lane
from agent.service.replies import Outcome, Replies, Route, rejection_outcome
from agent.service.store import Store


class Intake:
    """Takes command payloads in; `limits` and `queue_limit` are read per message (SIGHUP reloads)."""

    def __init__(self, store: Store, replies: Replies, lanes: Iterable[Lane], limits: Callable[[], Limits],
                 queue_limit: Callable[[], int], on_outbox: Callable[[], None]) -> None:
        self.store, self.replies, self.lanes = store, replies, list(lanes)
        self.limits, self.queue_limit, self.on_outbox = limits, queue_limit, on_outbox
        self.supported = {cmd for lane in self.lanes for cmd in lane.handlers} | {"cancel"}

    def take(self, payload: bytes, response_topic: Optional[str] = None,
             correlation_data: Optional[bytes] = None) -> str:
        """Answer one payload; returns what happened (`accepted`, `rejected:<code>`, `duplicate`)."""
        try:
            command = parse_command(payload, self.limits(), response_topic, correlation_data)
        except ProtocolError as error:
            return self._reject_payload(error, response_topic, correlation_data)
        try:
            return self._take(command)
        finally:
            self.on_outbox()

    def _take(self, command: Command) -> str:
        earlier = self.store.outcome(command.id)
        if earlier is not None:
            self.store.outbox_put_all(self.replies.replay(command.id, command.cmd, command, earlier,
                                                          self.store.job(command.id)))
            return "duplicate"
        if command.cmd not in self.supported:
            return self._reject(command, "unsupported", f"this agent cannot run {command.cmd!r} yet", remember=True)
        if command.cmd == "cancel":
            return self._cancel(command)
        if self.store.count_jobs("queued") >= self.queue_limit():
            return self._reject(command, "queue_full", f"{self.queue_limit()} jobs are queued already; "
                                                       "send it again later", remember=False)
        self.store.add_job(command.id, command.cmd, command.to_record(), command.priority,
                           publish=self.replies.event(command, "accepted"))
        for lane in self.lanes:
            if lane.lowest <= command.priority and (lane.highest is None or command.priority <= lane.highest):
                lane.wake()
        return "accepted"

    def _reject(self, command: Command, code: str, message: str, remember: bool) -> str:
        messages = self.replies.rejection(command.id, command.cmd, code, message, command)
        if remember:
            self.store.record_command(command.id, rejection_outcome(code, message), publish=messages)
        else:
            self.store.outbox_put_all(messages)
        return f"rejected:{code}"

    def _reject_payload(self, error: ProtocolError, response_topic: Optional[str],
                        correlation_data: Optional[bytes]) -> str:
        route: Route = None
        with contextlib.suppress(ProtocolError):  # unusable reply properties: no copy
            route = reply_to(response_topic, correlation_data)
        messages = self.replies.rejection(error.command_id, None, error.code, error.message, route)
        answer = f"rejected:{error.code}"
        if error.command_id is None:
            self.store.outbox_put_all(messages)
        else:
            earlier = self.store.record_command(error.command_id, rejection_outcome(error.code, error.message),
                                                publish=messages)
            if earlier is not None:  # the id was seen: its stored answer, not this payload's
                self.store.outbox_put_all(self.replies.replay(error.command_id, None, route, earlier,
                                                              self.store.job(error.command_id)))
                answer = "duplicate"
        self.on_outbox()
        return answer

    def _cancel(self, command: Command) -> str:
        target_id = command.args["target"]
        target = self.store.job(target_id)
        if target is None:
            return self._reject(command, "unknown_target", f"no job {target_id!r} is known here", remember=False)
        self.store.add_job(command.id, command.cmd, command.to_record(), command.priority,
                           publish=self.replies.event(command, "accepted"))
        self.run_cancels()
        return "accepted"

    def run_cancels(self) -> None:
        """Carry out every queued cancel (the one just accepted, or any a crash left queued)."""
        while True:
            job = self.store.next_job(0, 0)
            if job is None:
                return
            cancel = Command.from_record(job.command)
            target = self.store.job(cancel.args["target"])
            before = "unknown" if target is None else target.state
            if target is not None and target.state in ("queued", "running"):
                ended = self.replies.end(Command.from_record(target.command),
                                         Outcome("cancelled", code="cancelled", message=f"cancelled by {cancel.id}"))
                self.store.finish(target.id, "cancelled", Replies.stored_result(ended), publish=ended)
                for lane in self.lanes:
                    lane.cancel(target.id)
            ended = self.replies.end(cancel, Outcome("done", {"target": cancel.args["target"], "was": before}))
            self.store.finish(job.id, "done", Replies.stored_result(ended), publish=ended)
