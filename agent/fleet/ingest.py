"""Ingest: one raw MQTT message from a board (topic + payload bytes) into the coordinator's store.

`ingest` checks the message in the order a board's own intake does — size before parsing, then the
topic, the JSON and the message (`agent.mqtt.protocol.decode_message`), the kind against the topic,
the device id against the topic's — and then writes it: a status sets the board online or offline, a
telemetry message adds a sample (pruned to the `Retention`), an event only counts as the board being
heard from, and a result is stored once per (device id, command id), with one `Measurement` per report
it carries and the board's hardware and runtimes from its device section or `info` report. Anything
refused is recorded as a `RejectedMessage` with a one-line reason; nothing a board sends raises. The
returned `Outcome` says which of these happened (docs/coordinator.md, "Store and ingest").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.errors import ProtocolError
from agent.fleet import jobs, regressions, reports
from agent.fleet.settings import RegressionSettings
from agent.fleet.store import latest
from agent.fleet.store.database import Store
from agent.fleet.store.models import (
    Base,
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


def ingest(store: Store, topic: str, payload: bytes, settings: IngestSettings = IngestSettings(),
           received_at: Optional[datetime] = None) -> Outcome:
    """Store one message a board published on `topic` (or record why not) and say what became of it."""
    return ingest_batch(store, [(topic, payload)], settings, received_at)[0]


def ingest_batch(store: Store, messages: Sequence[Tuple[str, bytes]], settings: IngestSettings = IngestSettings(),
                 received_at: Optional[datetime] = None) -> List[Outcome]:
    """Store several messages in arrival order in one transaction (one commit for all: what makes ingest fast)
    and say what became of each; when the transaction fails, none of them is stored."""
    now = received_at or datetime.now(timezone.utc)
    with store.session() as session:
        boards = _lock_boards(session, messages, settings.root)
        return [_ingest_one(session, boards, topic, payload, settings, now) for topic, payload in messages]


def _lock_boards(session: Session, messages: Sequence[Tuple[str, bytes]], root: str) -> Dict[str, Board]:
    """The known boards the messages' topics name, loaded in one query and, on PostgreSQL, locked in the order
    of their ids: every row a message changes belongs to its board, so coordinators sharing the database take
    their locks in one order and never deadlock. Held here: the session's identity map keeps only what
    something references."""
    prefix = root + "/"
    named = {topic[len(prefix):].split("/", 1)[0] for topic, _ in messages if topic.startswith(prefix)}
    query = select(Board).where(Board.device_id.in_(sorted(named))).order_by(Board.device_id).with_for_update()
    return {board.device_id: board for board in session.scalars(query)}


def _ingest_one(session: Session, boards: Dict[str, Board], topic: str, payload: bytes, settings: IngestSettings,
                now: datetime) -> Outcome:
    """One message in the batch's transaction (`boards`: the batch's boards loaded so far)."""
    try:
        kind, device, message, ts = _checked(topic, payload, settings)
    except Rejected as refusal:
        session.add(RejectedMessage(topic=_printable(topic), code=refusal.code, reason=refusal.reason,
                                    received_at=now, size=len(payload)))
        return Outcome("rejected", code=refusal.code, reason=refusal.reason)
    board = boards.get(device) or boards.setdefault(device, _board(session, device, now))
    if isinstance(message, Status):
        _status(board, message, now)
    else:
        board.last_seen = max(board.last_seen, now)
    if isinstance(message, Telemetry):
        session.add(TelemetrySample(device_id=device, ts=ts, received_at=now, job=reports.text(message.job, 128),
                                    payload=payload.decode("utf-8")))
        session.flush()
        prune_telemetry(session, device, settings.retention, now)
    stored: Optional[StoredResult] = None
    alerts: List[regressions.AlertRecord] = []
    if isinstance(message, Result):
        stored = _result(session, board, message, ts, now, payload)
        if stored is None:
            return Outcome("duplicate", kind, device)
        alerts = regressions.check_result(session, stored, settings.regressions, now)
    sends = jobs.track(session, message, stored.id if stored else None, settings.root, now)
    return Outcome("seen" if kind == "event" else "stored", kind, device, sends=tuple(sends), alerts=tuple(alerts))


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


def _checked(topic: str, payload: bytes, settings: IngestSettings) -> Tuple[str, str, Message, datetime]:
    """The topic's kind and device, the decoded message and its time, or `Rejected`."""
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
    return kind, device, message, _timestamp(message.ts)


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


def _board(session: Session, device_id: str, now: datetime) -> Board:
    """The board's row, created at its first message."""
    board = session.get(Board, device_id)
    if board is None:
        _insert_once(session, Board(device_id=device_id, last_seen=now, groups=[]))
        board = session.get(Board, device_id)
        assert board is not None  # inserted here or by another coordinator a moment ago
    return board


def _insert_once(session: Session, row: Base) -> bool:
    """Insert `row` unless a unique key already holds it (another coordinator's, or a replay)."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def _status(board: Board, status: Status, now: datetime) -> None:
    """Presence from a retained status. An `offline` may be the broker's last will, sent for a board that
    is gone: it changes the state, not when the board was last heard from."""
    if status.state == "online":
        board.last_seen = max(board.last_seen, now)
    board.state, board.state_since = status.state, now
    board.agent_version = reports.text(status.version)
    board.groups = list(status.groups or [])
    board.platform = reports.text(reports.lookup(status.platform, "summary"))


def _result(session: Session, board: Board, result: Result, ts: datetime, now: datetime,
            payload: bytes) -> Optional[StoredResult]:
    """Store a result once: None when (device, command id) is stored already (a replay); only a new
    result describes its board."""
    row = StoredResult(device_id=board.device_id, command_id=result.command_id, cmd=result.cmd, status=result.status,
                       code=reports.text(result.code, 64), ts=ts, received_at=now, payload=payload.decode("utf-8"))
    if result.cmd in MEASUREMENT_COMMANDS:
        row.measurements = [Measurement(device_id=board.device_id, ts=ts, **asdict(item))
                            for item in reports.measurements(result.report)]
    if not _insert_once(session, row):
        return None
    latest.record(session, row.measurements)
    if result.cmd in MEASUREMENT_COMMANDS:
        first = reports.lookup(result.report, "reports")
        _hardware(board, reports.lookup(first[0], "device") if isinstance(first, list) and first else None, ts)
    elif result.cmd == "info":
        _hardware(board, reports.lookup(result.report, "device"), ts)
        listed = reports.runtimes(result.report)
        if listed is not None and (board.hardware_at is None or ts >= board.hardware_at):
            board.runtimes = [BoardRuntime(**asdict(runtime)) for runtime in listed]
    return row


def _hardware(board: Board, device: object, ts: datetime) -> None:
    """Describe the board from a device section, unless a newer message described it already."""
    found = reports.hardware(device)
    if found is None or (board.hardware_at is not None and ts < board.hardware_at):
        return
    for name, value in asdict(found).items():
        setattr(board, name, value)
    board.hardware_at = ts
