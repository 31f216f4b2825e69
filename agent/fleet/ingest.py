"""Ingest: one raw MQTT message from a board (topic + payload bytes) into the coordinator's store.

`ingest` checks the message in the order a board's own intake does — size before parsing, then the
topic, the JSON and the message (`agent.mqtt.protocol.decode_message`), the kind against the topic,
the device id against the topic's — and then writes it: a status sets the board online or offline, a
telemetry message adds a sample (pruned to the `Retention`), an event only counts as the board being
heard from, and a result is stored once per (device id, command id), with one `Measurement` per report
it carries and the board's hardware and runtimes from its device section or `info` report. Anything
refused is recorded as a `RejectedMessage` with a one-line reason; nothing a board sends raises. The
returned `Outcome` says which of these happened (docs/coordinator.md, "Store and ingest").

`ingest_batch` stores many messages in one transaction and, set-based, in a few statements per batch: one
insert for the boards first heard from, one for the telemetry, one for the results (`ON CONFLICT DO NOTHING
RETURNING`: a replay is absorbed by the unique key), one for their measurements, one upsert of the latest
measurements, one baseline query per configuration (agent/fleet/regressions.py) and one read of the fleet-job
rows the batch moves. What it stores is what storing the messages one by one in arrival order would store
(tests/fleet/test_ingest_batch.py holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from agent.errors import ProtocolError
from agent.fleet import jobs, regressions, reports
from agent.fleet.settings import RegressionSettings
from agent.fleet.store import latest
from agent.fleet.store.database import Store, dialect_insert, insert_rows
from agent.fleet.store.models import (
    Board,
    BoardRuntime,
    Measurement,
    RejectedMessage,
    StoredResult,
    TelemetrySample,
)
from agent.mqtt.protocol import (
    DEFAULT_ROOT,
    Message,
    Result,
    Status,
    Telemetry,
    decode_message,
    validate_device_id,
    validate_group_name,
)
from agent.mqtt.schema import is_command_id

TOPIC_KINDS = {"status": "status", "telemetry": "telemetry", "events": "event", "results": "result"}
MEASUREMENT_COMMANDS = ("bench", "eval", "profile")


@dataclass(frozen=True)
class Retention:
    """How much telemetry is kept per board: samples younger than `max_age_s` and at most `max_count`
    (None: no bound of that kind)."""

    max_age_s: Optional[float] = 7 * 24 * 3600.0
    max_count: Optional[int] = 10_000


@dataclass(frozen=True)
class IngestSettings:
    """The topic root the boards publish under, the largest payload taken, and the telemetry retention."""

    root: str = DEFAULT_ROOT
    max_payload_bytes: int = 4 * 1024 * 1024
    retention: Retention = field(default_factory=Retention)
    regressions: RegressionSettings = field(default_factory=RegressionSettings)


@dataclass(frozen=True)
class Outcome:
    """What became of one message: `stored`, `duplicate` (a result already stored), `seen` (an event: the
    board's last seen only) or `rejected` with a `code` and a one-line `reason`."""

    outcome: str
    kind: Optional[str] = None
    device: Optional[str] = None
    code: Optional[str] = None
    reason: Optional[str] = None
    sends: Tuple[jobs.Send, ...] = ()  # fleet-job commands a board that came back online is owed
    alerts: Tuple[regressions.AlertRecord, ...] = ()  # regressions and expected changes a new result raised


class Rejected(Exception):
    """Why a message is refused: a code and a one-line reason (internal to ingest)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True, eq=False)
class Checked:
    """A message that passed the checks: its topic's kind and device, the message, its `ts`, its bytes. Each is
    itself (equal and hashed by identity): a batch may hold the same message twice, a replay."""

    kind: str
    device: str
    message: Message
    ts: datetime
    payload: bytes


def ingest(store: Store, topic: str, payload: bytes, settings: IngestSettings = IngestSettings(),
           received_at: Optional[datetime] = None) -> Outcome:
    """Store one message a board published on `topic` (or record why not) and say what became of it."""
    return ingest_batch(store, [(topic, payload)], settings, received_at)[0]


def ingest_batch(store: Store, messages: Sequence[Tuple[str, bytes]], settings: IngestSettings = IngestSettings(),
                 received_at: Optional[datetime] = None) -> List[Outcome]:
    """Store several messages in one transaction, as storing them one by one in arrival order would, and say what
    became of each; when the transaction fails, none of them is stored. Set-based (what makes ingest fast): a few
    statements per batch and kind of message, not per message."""
    now = received_at or datetime.now(timezone.utc)
    checked: List[Union[Checked, Rejected]] = []
    for topic, payload in messages:
        try:
            checked.append(_checked(topic, payload, settings))
        except Rejected as refusal:
            checked.append(refusal)
    accepted = [item for item in checked if isinstance(item, Checked)]
    with store.session() as session:
        session.add_all(RejectedMessage(topic=_printable(topic), code=item.code, reason=item.reason, received_at=now,
                                        size=len(payload))
                        for (topic, payload), item in zip(messages, checked) if isinstance(item, Rejected))
        boards = _lock_boards(session, sorted({item.device for item in accepted}), now)
        for item in accepted:
            _presence(boards[item.device], item.message, now)
        _store_telemetry(session, [item for item in accepted if isinstance(item.message, Telemetry)],
                         settings.retention, now)
        stored = _store_results(session, boards, [item for item in accepted if isinstance(item.message, Result)], now)
        alerts = regressions.check_results(session, [row for new in stored.values() for row in new.measurements],
                                           settings.regressions, now)
        tracked = [item for item in accepted if not isinstance(item.message, Result) or item in stored]
        sends = jobs.track(session, [(item.message, stored[item].id if item in stored else None) for item in tracked],
                           settings.root, now)
        owed = {item: tuple(due) for item, due in zip(tracked, sends)}
    return [_outcome(item, stored, owed, alerts) for item in checked]


def _outcome(item: Union[Checked, Rejected], stored: Dict[Checked, NewResult],
             owed: Dict[Checked, Tuple[jobs.Send, ...]], alerts: Sequence[regressions.AlertRecord]) -> Outcome:
    """What became of one message of a batch."""
    if isinstance(item, Rejected):
        return Outcome("rejected", code=item.code, reason=item.reason)
    if item.kind == "result" and item not in stored:
        return Outcome("duplicate", item.kind, item.device)
    raised = tuple(alert for alert in alerts if item in stored and alert.result_id == stored[item].id)
    return Outcome("seen" if item.kind == "event" else "stored", item.kind, item.device, sends=owed[item],
                   alerts=raised)


def _lock_boards(session: Session, devices: Sequence[str], now: datetime) -> Dict[str, Board]:
    """The boards of a batch, created at their first message, loaded in one query and, on PostgreSQL, locked in
    the order of their ids: every row a message changes belongs to its board, so coordinators sharing the
    database take their locks in one order and never deadlock."""
    if not devices:
        return {}
    table: Any = Board.__table__
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(index_elements=[table.c.device_id]),
                    [{"device_id": device, "last_seen": now, "groups": []} for device in devices])
    query = select(Board).where(Board.device_id.in_(devices)).order_by(Board.device_id).with_for_update()
    return {board.device_id: board for board in session.scalars(query)}


def _presence(board: Board, message: Message, now: datetime) -> None:
    """What any message says of its board: heard from now; a status also its state, version, groups, platform."""
    if isinstance(message, Status):
        _status(board, message, now)
    else:
        board.last_seen = max(board.last_seen, now)


def _store_telemetry(session: Session, items: Sequence[Checked], retention: Retention, now: datetime) -> None:
    """Add the telemetry samples, then prune each of their boards to the retention."""
    if not items:
        return
    session.execute(insert(TelemetrySample), [
        {"device_id": item.device, "ts": item.ts, "received_at": now, "job": reports.text(item.message.job, 128),
         "payload": item.payload.decode("utf-8")} for item in items if isinstance(item.message, Telemetry)])
    for device in sorted({item.device for item in items}):
        prune_telemetry(session, device, retention, now)


def prune_telemetry(session: Session, device_id: str, retention: Retention, now: datetime) -> None:
    """Drop a board's telemetry samples beyond the retention: older than its age, past its count."""
    if retention.max_age_s is not None:
        cutoff = now - timedelta(seconds=retention.max_age_s)
        session.execute(delete(TelemetrySample).where(TelemetrySample.device_id == device_id,
                                                      TelemetrySample.received_at < cutoff))
    if retention.max_count is not None:
        beyond = (select(TelemetrySample.id).where(TelemetrySample.device_id == device_id)
                  .order_by(TelemetrySample.received_at.desc(), TelemetrySample.id.desc()).offset(retention.max_count))
        session.execute(delete(TelemetrySample).where(TelemetrySample.id.in_(beyond)))


def _checked(topic: str, payload: bytes, settings: IngestSettings) -> Checked:
    """The message with its topic's kind and device, decoded and checked, or `Rejected`."""
    if len(payload) > settings.max_payload_bytes:
        raise Rejected("too_large", f"payload of {len(payload)} bytes exceeds the "
                                    f"{settings.max_payload_bytes}-byte limit")
    prefix = settings.root + "/"
    parts = topic[len(prefix):].split("/") if topic.startswith(prefix) else []
    if len(parts) != 2 or parts[1] not in TOPIC_KINDS:
        raise Rejected("bad_topic", f"topic {topic[:200]!r} is not {prefix}<id>/"
                                    f"({'|'.join(TOPIC_KINDS)})")
    try:
        device = validate_device_id(parts[0])
        message = decode_message(payload)
    except ProtocolError as error:
        raise Rejected(error.code, error.message) from None
    kind = TOPIC_KINDS[parts[1]]
    if kind != message.KIND:
        raise Rejected("wrong_topic", f"a {message.KIND} message on a {parts[1]} topic")
    if message.device != device:
        raise Rejected("device_mismatch", f"the payload's device {str(message.device)[:80]!r} is not the "
                                          f"topic's {device!r}")
    _check_fields(message)
    return Checked(kind, device, message, _timestamp(message.ts), payload)


def _check_fields(message: Message) -> None:
    """The fields ingest stores as they are: a status's groups, a result's command id and command name."""
    if isinstance(message, Status) and message.groups is not None:
        if not isinstance(message.groups, list) or not all(isinstance(group, str) for group in message.groups):
            raise Rejected("bad_value", "a status's 'groups' must be a list of group names")
        for group in message.groups:
            try:
                validate_group_name(group)
            except ProtocolError as error:
                raise Rejected(error.code, error.message) from None
    if isinstance(message, Result):
        if not is_command_id(message.command_id):
            raise Rejected("bad_value", f"result command id {str(message.command_id)[:80]!r} is not a command id")
        if reports.text(message.cmd, 64) is None:
            raise Rejected("bad_value", "a result's 'cmd' must be a command name")


def _timestamp(value: object) -> datetime:
    """A message's `ts` (ISO 8601 UTC with a Z) as an aware datetime, or `Rejected`."""
    try:
        if not isinstance(value, str) or not value.endswith("Z"):
            raise ValueError(value)
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)
    except ValueError:
        raise Rejected("bad_value", f"'ts' {str(value)[:40]!r} is not an ISO 8601 UTC time") from None


def _printable(topic: str) -> str:
    return reports.text(topic) or repr(topic)[:reports.TEXT_LIMIT]


def _status(board: Board, status: Status, now: datetime) -> None:
    """Presence from a retained status. An `offline` may be the broker's last will, sent for a board that
    is gone: it changes the state, not when the board was last heard from."""
    if status.state == "online":
        board.last_seen = max(board.last_seen, now)
    board.state, board.state_since = status.state, now
    board.agent_version = reports.text(status.version)
    board.groups = list(status.groups or [])
    board.platform = reports.text(reports.lookup(status.platform, "summary"))


@dataclass(frozen=True)
class NewResult:
    """A result this batch stored: its row's id and its measurements (with their ids)."""

    id: int
    measurements: List[Measurement]


def _store_results(session: Session, boards: Dict[str, Board], items: Sequence[Checked],
                   now: datetime) -> Dict[Checked, NewResult]:
    """Store each result once (a result whose (device, command id) is stored already, or came earlier in the batch,
    is a replay), with its measurements and the latest of their configurations; only a new result describes its
    board. Keyed by the batch's item."""
    first: Dict[Tuple[str, str], Tuple[Checked, Result]] = {}
    for item in items:
        if isinstance(item.message, Result):
            first.setdefault((item.device, item.message.command_id), (item, item.message))
    if not first:
        return {}
    table: Any = StoredResult.__table__
    rows = [{"device_id": item.device, "command_id": result.command_id, "cmd": result.cmd, "status": result.status,
             "code": reports.text(result.code, 64), "ts": item.ts, "received_at": now,
             "payload": item.payload.decode("utf-8")} for item, result in first.values()]
    statement = (dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=[table.c.device_id, table.c.command_id])
        .returning(table.c.id, table.c.device_id, table.c.command_id))
    ids: Dict[Tuple[str, str], int] = {(row.device_id, row.command_id): row.id
                                       for row in session.execute(statement, rows)}
    new = [(item, result, NewResult(ids[key], [])) for key, (item, result) in first.items() if key in ids]
    measured = [{"result_id": stored.id, "device_id": item.device, "ts": item.ts, **reports.columns(found)}
                for item, result, stored in new if result.cmd in MEASUREMENT_COMMANDS
                for found in reports.measurements(result.report)]
    if measured:
        by_result = {stored.id: stored for _, _, stored in new}
        measurements: Any = Measurement.__table__
        for measurement_id, row in zip(insert_rows(session, measurements, measured), measured):
            by_result[row["result_id"]].measurements.append(Measurement(id=measurement_id, **row))
    latest.record(session, [row for _, _, stored in new for row in stored.measurements])
    for item, result, _ in new:
        _describe(boards[item.device], result, item.ts)
    return {item: stored for item, _, stored in new}


def _describe(board: Board, result: Result, ts: datetime) -> None:
    """The board's hardware from a measurement's report or an `info` report, and its runtimes from the latter."""
    if result.cmd in MEASUREMENT_COMMANDS:
        first = reports.lookup(result.report, "reports")
        _hardware(board, reports.lookup(first[0], "device") if isinstance(first, list) and first else None, ts)
    elif result.cmd == "info":
        _hardware(board, reports.lookup(result.report, "device"), ts)
        listed = reports.runtimes(result.report)
        if listed is not None and (board.hardware_at is None or ts >= board.hardware_at):
            board.runtimes = [BoardRuntime(**reports.columns(runtime)) for runtime in listed]


def _hardware(board: Board, device: object, ts: datetime) -> None:
    """Describe the board from a device section, unless a newer message described it already."""
    found = reports.hardware(device)
    if found is None or (board.hardware_at is not None and ts < board.hardware_at):
        return
    for name, value in reports.columns(found).items():
        setattr(board, name, value)
    board.hardware_at = ts
