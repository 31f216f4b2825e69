"""Everything edge-agent publishes, and the one JSON codec for the wire.

`Event`, `Result`, `Status` and `Telemetry` are typed, versioned messages (`"schema":
"edge-agent/<kind>/1"` and a UTC `ts`); `encode` is the only place they become bytes, and
`decode_json` the only place untrusted bytes become JSON. See docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from agent.errors import ProtocolError
from agent.mqtt.schema import show

_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how JSON text spells a UTF-16 surrogate


def decode_json(payload: bytes) -> Any:
    """Strict JSON from untrusted bytes: UTF-8 only, no duplicate keys, no NaN/Infinity, bounded
    nesting; any failure is a `ProtocolError` with code `invalid_json`; a string that is no Unicode text
    (a lone surrogate escape such as "\\udfff") is `bad_argument`."""
    try:
        text = payload.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise ProtocolError("invalid_json", f"payload is not UTF-8 text: {error.reason} at byte "
                                            f"{error.start}") from None
    except RecursionError:
        raise ProtocolError("invalid_json", "payload JSON is nested too deeply") from None
    except ValueError as error:
        raise ProtocolError("invalid_json", f"payload is not valid JSON: {error}") from None
    if _SURROGATE_ESCAPE.search(text):  # decoded UTF-8 holds no surrogate: only an escape can make one
        _check_text(document)
    return document


def _check_text(value: Any) -> None:
    """Raise `bad_argument` for the first string (key or value) that cannot be encoded as UTF-8."""
    texts = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in texts:
        for text in (key, item):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ProtocolError("bad_argument", f"{show(text)} is not Unicode text "
                                                        "(a lone surrogate escape)") from None
        if isinstance(item, (dict, list)):
            _check_text(item)


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):  # a key came twice: name the first one repeated
        seen: Set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError("invalid_json", f"duplicate key {show(key)} in JSON object")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ProtocolError("invalid_json", f"{name} is not valid JSON")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z: every message's `ts`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


EVENT_TYPES = ("accepted", "rejected", "started", "progress", "done", "failed", "cancelled",
               "interrupted")
FINAL_STATUSES = ("done", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class Event:
    """A change in a command's life: accepted/rejected (with code and message), started, progress
    (0..1), or its end; `detail` carries anything else (e.g. the step being measured).
    `command_id` is None only for the rejection of a payload whose id could not be read."""

    KIND = "event"
    device: str
    command_id: Optional[str]
    event: str
    cmd: Optional[str] = None
    code: Optional[str] = None
    message: Optional[str] = None
    progress: Optional[float] = None
    detail: Optional[Dict[str, Any]] = None
    ts: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _check_choice("event", self.event, EVENT_TYPES)


@dataclass(frozen=True)
class Result:
    """A job's final outcome: `report` when it is done, `code`/`message` when it is not."""

    KIND = "result"
    device: str
    command_id: str
    cmd: str
    status: str
    report: Optional[Dict[str, Any]] = None
    code: Optional[str] = None
    message: Optional[str] = None
    ts: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _check_choice("status", self.status, FINAL_STATUSES)


@dataclass(frozen=True)
class Status:
    """The retained presence of a device: `online` (birth) or `offline` (the last will)."""

    KIND = "status"
    device: str
    state: str
    version: str
    groups: Optional[List[str]] = None
    platform: Optional[Dict[str, Any]] = None
    ts: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _check_choice("state", self.state, ("online", "offline"))


@dataclass(frozen=True)
class Telemetry:
    """Periodic board readings (load, memory, temperatures, clocks, power) and the running job's id."""

    KIND = "telemetry"
    device: str
    readings: Dict[str, Any]
    job: Optional[str] = None
    ts: str = field(default_factory=utc_now)


Message = Union[Event, Result, Status, Telemetry]
MESSAGE_TYPES = {cls.KIND: cls for cls in (Event, Result, Status, Telemetry)}
# kind -> (topic suffix under <root>/<id>/, QoS, retained)
ROUTES = {"status": ("status", 1, True), "telemetry": ("telemetry", 0, False),
           "event": ("events", 1, False), "result": ("results", 1, False)}


def _check_choice(name: str, value: str, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def schema_name(kind: str) -> str:
    """The `schema` value of a message kind, e.g. `edge-agent/event/1`."""
    return f"edge-agent/{kind}/1"


def encode(message: Message) -> bytes:
    """Serialise an outgoing message: `schema`, then its fields (optional ones left out when empty);
    always valid JSON (NaN/Infinity become the strings "NaN"/"Infinity", numpy values plain ones)."""
    body: Dict[str, Any] = {"schema": schema_name(message.KIND)}
    for item in fields(message):
        value = getattr(message, item.name)
        if value is not None or item.default is MISSING:
            body[item.name] = _plain(value)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE[repr(value)]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def decode_message(payload: bytes) -> Message:
    """Parse a message an agent published (what a coordinator does with replies)."""
    document = decode_json(bytes(payload))
    if not isinstance(document, dict):
        raise ProtocolError("not_an_object", "a message must be a JSON object")
    kinds = {schema_name(kind): cls for kind, cls in MESSAGE_TYPES.items()}
    schema = document.pop("schema", None)
    cls = kinds.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise ProtocolError("bad_value", "message has no known 'schema'")
    known = {item.name for item in fields(cls)}
    try:
        return cls(**{key: value for key, value in document.items() if key in known})
    except (TypeError, ValueError) as error:
        raise ProtocolError("bad_value", f"malformed {cls.KIND} message: {error}") from None
