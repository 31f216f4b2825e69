"""Protocol v1 between a fleet dashboard and edge-agent: topics and commands (docs/protocol.md).

The one module the daemon and the coordinator import: `parse_command` turns untrusted bytes (and
MQTT 5 reply properties) into a validated `Command` or raises `ProtocolError(code, message)`;
`Topics` names every topic and, through `Topics.publications`, says where an outgoing message goes
with which QoS and retain flag. The argument rules live in `schema`, the outgoing messages and the
JSON codec in `messages`; both are re-exported here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple, Union

from agent.config import name_problem, root_problem
from agent.errors import ProtocolError
from agent.mqtt.messages import (
    ROUTES,
    Event,
    Message,
    Result,
    Status,
    Telemetry,
    decode_json,
    decode_message,
    encode,
)
from agent.mqtt.outbox import OutboxMessage
from agent.mqtt.schema import COMMANDS, ERROR_CODES, Limits, check_command_id, is_command_id, show

__all__ = ["COMMANDS", "ERROR_CODES", "Command", "Event", "Limits", "Message", "ReplyTo",
           "Result", "Status", "Telemetry", "Topics", "decode_message", "encode", "encode_command", "new_command_id",
           "parse_command", "reply_to", "target_topic", "validate_device_id", "validate_group_name"]

DEFAULT_ROOT = "edge"
DEFAULT_LIMITS = Limits()
COMMAND_SCHEMA = "edge-agent/command/1"
_MAX_RESPONSE_TOPIC = 256
_MAX_CORRELATION_BYTES = 256
_ENVELOPE_FIELDS = ("id", "cmd", "args", "schema")


def validate_device_id(value: str) -> str:
    """Check a device id (`agent.config.name_problem`): a `bad_value` ProtocolError names the problem."""
    return _checked(value, name_problem(value, "device id"))


def validate_group_name(value: str) -> str:
    """Check a group name (`agent.config.name_problem`): a `bad_value` ProtocolError names the problem."""
    return _checked(value, name_problem(value, "group name"))


def _checked(value: str, problem: Optional[str]) -> str:
    if problem:
        raise ProtocolError("bad_value", problem)
    return value


def target_topic(target: str, root: str = DEFAULT_ROOT) -> str:
    """Command topic for a coordinator's target: a device id, `group:NAME`, or `all`."""
    if target == "all":
        return f"{root}/all/cmd"
    if target.startswith("group:"):
        return f"{root}/group/{validate_group_name(target[len('group:'):])}/cmd"
    return f"{root}/{validate_device_id(target)}/cmd"


@dataclass(frozen=True)
class Topics:
    """The topics one device subscribes to and publishes on, under a configurable root."""

    device_id: str
    groups: Tuple[str, ...] = ()
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)
        object.__setattr__(self, "groups", tuple(validate_group_name(group) for group in self.groups))
        _checked(self.root, root_problem(self.root))

    def subscriptions(self) -> List[str]:
        """The command topics this device listens on: its own, each of its groups', and `all`."""
        groups = [target_topic(f"group:{group}", self.root) for group in self.groups]
        return [target_topic(self.device_id, self.root), *groups, target_topic("all", self.root)]

    def topic(self, kind: str) -> str:
        """This device's topic for an outgoing message kind (`status`, `event`, ...)."""
        return f"{self.root}/{self.device_id}/{ROUTES[kind][0]}"

    def publications(self, message: Message, command: Optional[Union[Command, ReplyTo]] = None) -> List[OutboxMessage]:
        """The outbox entries for a message: its own topic, plus a copy to the command's MQTT 5
        response topic (with its correlation data) when the command (or a bare `ReplyTo`) names one."""
        _, qos, retain = ROUTES[message.KIND]
        own = OutboxMessage(self.topic(message.KIND), encode(message), qos, retain, message.KIND)
        if command is None or command.response_topic is None:
            return [own]
        reply = replace(own, topic=command.response_topic, retain=False,
                        correlation_data=command.correlation_data)
        return [own, reply]


@dataclass(frozen=True)
class ReplyTo:
    """The MQTT 5 reply properties of a payload that did not parse into a `Command`."""

    response_topic: Optional[str]
    correlation_data: Optional[bytes] = None


def reply_to(response_topic: Optional[str], correlation_data: Optional[bytes]) -> Optional[ReplyTo]:
    """Checked reply properties (as `parse_command` checks them), or None when there is no response
    topic; raises `ProtocolError` when they are unusable."""
    if response_topic is None:
        return None
    return ReplyTo(_check_response_topic(response_topic), _check_correlation(correlation_data))


@dataclass(frozen=True)
class Command:
    """A validated command: `id` (the idempotency key), `cmd`, its checked `args`, MQTT 5 reply data."""

    id: str
    cmd: str
    args: Dict[str, Any] = field(default_factory=dict)
    response_topic: Optional[str] = None
    correlation_data: Optional[bytes] = None

    @property
    def priority(self) -> int:
        """Queue priority of this command's kind: lower runs first (ping before a benchmark)."""
        return COMMANDS[self.cmd].priority

    def to_record(self) -> str:
        """JSON text for the job store, reply data included (correlation data as hex)."""
        record = {"id": self.id, "cmd": self.cmd, "args": self.args, "response_topic": self.response_topic,
                  "correlation_data": None if self.correlation_data is None else self.correlation_data.hex()}
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_record(cls, text: str) -> Command:
        """The command `to_record` stored (trusted: it was validated when it arrived)."""
        record = json.loads(text)
        correlation = record["correlation_data"]
        return cls(record["id"], record["cmd"], record["args"], record["response_topic"],
                   None if correlation is None else bytes.fromhex(correlation))


def new_command_id() -> str:
    """A fresh command id for a coordinator to send (32 hex digits)."""
    return uuid.uuid4().hex


def encode_command(command: Command) -> bytes:
    """The envelope a coordinator publishes for a command (reply data travels as MQTT 5 properties)."""
    envelope = {"schema": COMMAND_SCHEMA, "id": command.id, "cmd": command.cmd, "args": command.args}
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


def parse_command(payload: bytes, limits: Limits = DEFAULT_LIMITS, response_topic: Optional[str] = None,
                  correlation_data: Optional[bytes] = None) -> Command:
    """Validate untrusted command bytes (and MQTT 5 reply properties) into a `Command`.

    Raises `ProtocolError` with one of the codes in `ERROR_CODES`, never anything else; the size
    cap is checked before any parsing."""
    if len(payload) > limits.max_payload_bytes:
        raise ProtocolError("too_large", f"payload of {len(payload)} bytes exceeds the "
                                         f"{limits.max_payload_bytes}-byte limit")
    document = decode_json(bytes(payload))
    if not isinstance(document, dict):
        raise ProtocolError("not_an_object", f"a command must be a JSON object, not {type(document).__name__}")
    raw_id = document.get("id")
    try:
        return _parse_envelope(document, limits, response_topic, correlation_data)
    except ProtocolError as error:
        error.command_id = raw_id if is_command_id(raw_id) else None
        raise


def _parse_envelope(document: Dict[str, Any], limits: Limits, response_topic: Optional[str],
                    correlation_data: Optional[bytes]) -> Command:
    for key in document:
        if key not in _ENVELOPE_FIELDS:
            raise ProtocolError("unknown_argument", f"unknown envelope field {show(key)} "
                                                    f"(allowed: {', '.join(_ENVELOPE_FIELDS)})")
    if "schema" in document and document["schema"] != COMMAND_SCHEMA:
        raise ProtocolError("bad_value", f"schema {show(document['schema'])} is not {COMMAND_SCHEMA}")
    command_id = check_command_id("id", _required(document, "id", str), limits)
    name = _required(document, "cmd", str)
    if name not in COMMANDS:
        raise ProtocolError("unknown_command", f"unknown command {show(name)} "
                                               f"(known: {', '.join(sorted(COMMANDS))})")
    args = document.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("wrong_type", f"'args' must be an object, not {type(args).__name__}")
    checked = COMMANDS[name].check(args, limits)
    return Command(command_id, name, checked, _check_response_topic(response_topic),
                   _check_correlation(correlation_data))


def _required(document: Dict[str, Any], key: str, kind: type) -> Any:
    if key not in document:
        raise ProtocolError("missing_field", f"the command envelope has no {key!r}")
    if not isinstance(document[key], kind):
        raise ProtocolError("wrong_type", f"{key!r} must be a {kind.__name__}, "
                                          f"not {type(document[key]).__name__}")
    return document[key]


def _check_response_topic(topic: Optional[str]) -> Optional[str]:
    if topic is None:
        return None
    if (not 0 < len(topic) <= _MAX_RESPONSE_TOPIC or topic.startswith("$")
            or any(char in topic for char in "+#\0")):
        raise ProtocolError("bad_value", f"response topic {show(topic)} must be 1-{_MAX_RESPONSE_TOPIC} "
                                         "characters without + # NUL, not starting with $")
    return topic


def _check_correlation(data: Optional[bytes]) -> Optional[bytes]:
    if data is not None and len(data) > _MAX_CORRELATION_BYTES:
        raise ProtocolError("bad_value", f"correlation data of {len(data)} bytes exceeds "
                                         f"{_MAX_CORRELATION_BYTES}")
    return None if data is None else bytes(data)
