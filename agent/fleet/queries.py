"""Questions asked of the coordinator's store: the boards (`list_boards`, `get_board`), the results
(`list_results`, `get_result`), how one model runs across the fleet (`compare_boards`, a row per board and
configuration with its latest measures), how far boards of the same model spread (`spread`), and how many
messages were rejected, by code (`rejected_counts`). Each answer is a frozen dataclass.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from agent.fleet.reports import Hardware, Measured, Runtime, integer, lookup, number, text
from agent.fleet.store.database import Store
from agent.fleet.store.models import (
    Board,
    LatestMeasurement,
    Measurement,
    RejectedMessage,
    StoredResult,
    TelemetrySample,
)

# A configuration on one board: what a comparison row stands for (the batch size too, when it varies).
CONFIGURATION = (Measurement.board_model, Measurement.device_id, Measurement.backend, Measurement.precision,
                 Measurement.threads, Measurement.runtime_version, Measurement.batch)


@dataclass(frozen=True)
class BoardComparison:
    """The latest successful measurement of one model on one board in one configuration."""

    measurement_id: int
    board_model: Optional[str]
    device_id: str
    backend: Optional[str]
    precision: Optional[str]
    threads: Optional[int]
    runtime_version: Optional[str]
    batch: Optional[int]
    ts: datetime
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    throughput_per_s: Optional[float]
    peak_rss_mb: Optional[float]
    top1: Optional[float]
    top1_agreement: Optional[float]
    stability: Optional[str]


@dataclass(frozen=True)
class Spread:
    """How the p50 of one configuration spreads across the boards of one board model."""

    board_model: Optional[str]
    backend: Optional[str]
    precision: Optional[str]
    threads: Optional[int]
    runtime_version: Optional[str]
    batch: Optional[int]
    boards: int
    p50_min_ms: float
    p50_median_ms: float
    p50_max_ms: float


@dataclass(frozen=True)
class BoardView:
    """A board: its presence, the hardware and runtimes it last described, and (for one board) its newest
    telemetry samples, newest first."""

    device_id: str
    state: Optional[str]
    state_since: Optional[datetime]
    last_seen: datetime
    agent_version: Optional[str]
    groups: List[str]
    platform: Optional[str]
    hardware: Hardware
    runtimes: List[Runtime]
    telemetry: List[Dict[str, Any]]


@dataclass(frozen=True)
class ResultView:
    """One stored result: who ran which command, how it ended, its measurements (and, for one result, the
    message as it arrived)."""

    device_id: str
    command_id: str
    cmd: str
    status: str
    code: Optional[str]
    ts: datetime
    received_at: datetime
    measurements: List[Measured]
    payload: Optional[Dict[str, Any]] = None


def list_boards(store: Store) -> List[BoardView]:
    """Every board the coordinator has heard from, by device id."""
    query = select(Board).order_by(Board.device_id).options(selectinload(Board.runtimes))
    with store.session() as session:
        return [_board_view(board, []) for board in session.scalars(query)]


def get_board(store: Store, device_id: str, telemetry: int = 20) -> Optional[BoardView]:
    """One board with its newest `telemetry` samples, or None."""
    with store.session() as session:
        board = session.get(Board, device_id, options=[selectinload(Board.runtimes)])
        if board is None:
            return None
        samples = session.scalars(select(TelemetrySample).where(TelemetrySample.device_id == device_id)
                                  .order_by(TelemetrySample.received_at.desc(), TelemetrySample.id.desc())
                                  .limit(telemetry))
        return _board_view(board, [sample.document() for sample in samples])


def _board_view(board: Board, telemetry: List[Dict[str, Any]]) -> BoardView:
    hardware = Hardware(**{item.name: getattr(board, item.name) for item in fields(Hardware)})
    runtimes = [Runtime(row.name, row.available, row.version, row.reason) for row in board.runtimes]
    return BoardView(board.device_id, board.state, board.state_since, board.last_seen, board.agent_version,
                     list(board.groups or []), board.platform, hardware, runtimes, telemetry)


def list_results(store: Store, device_id: Optional[str] = None, model_sha256: Optional[str] = None,
                 cmd: Optional[str] = None, limit: int = 100) -> List[ResultView]:
    """The newest results first, optionally of one board, one model file (by sha256) or one command."""
    query = select(StoredResult).options(selectinload(StoredResult.measurements))
    if device_id is not None:
        query = query.where(StoredResult.device_id == device_id)
    if cmd is not None:
        query = query.where(StoredResult.cmd == cmd)
    if model_sha256 is not None:
        query = query.where(StoredResult.id.in_(select(Measurement.result_id)
                                                .where(Measurement.model_sha256 == model_sha256)))
    query = query.order_by(StoredResult.ts.desc(), StoredResult.id.desc()).limit(limit)
    with store.session() as session:
        return [result_view(row, with_payload=False) for row in session.scalars(query)]


def get_result(store: Store, device_id: str, command_id: str) -> Optional[ResultView]:
    """One result with its payload, or None."""
    query = (select(StoredResult).where(StoredResult.device_id == device_id, StoredResult.command_id == command_id)
             .options(selectinload(StoredResult.measurements)))
    with store.session() as session:
        row = session.scalars(query).first()
        return None if row is None else result_view(row, with_payload=True)


def result_view(row: StoredResult, with_payload: bool) -> ResultView:
    """A stored result (its measurements loaded) as a `ResultView`, with its payload or without."""
    measured = [Measured(**{item.name: getattr(measurement, item.name) for item in fields(Measured)})
                for measurement in row.measurements]
    return ResultView(row.device_id, row.command_id, row.cmd, row.status, row.code, row.ts, row.received_at, measured,
                      row.document() if with_payload else None)


def known_model(store: Store, model_sha256: str) -> bool:
    """Whether any measurement of this model file (by sha256) is stored."""
    with store.session() as session:
        found = session.scalars(select(Measurement.id).where(Measurement.model_sha256 == model_sha256).limit(1))
        return found.first() is not None


@dataclass(frozen=True)
class SelectedConfiguration:
    """What a board's newest `select` of a model chose (from its stored select result `command_id`)."""

    device_id: str
    command_id: str
    ts: datetime
    backend: Optional[str]
    precision: Optional[str]
    threads: Optional[int]
    variant: Optional[str]
    p50_ms: Optional[float]
    top1: Optional[float]
    stability: Optional[str]


def selected_configurations(store: Store, model_sha256: str, scan: int = 1000) -> List[SelectedConfiguration]:
    """Per board, the choice of its newest successful `select` whose model files include this sha256 (the
    newest `scan` select results are read)."""
    query = (select(StoredResult).where(StoredResult.cmd == "select", StoredResult.status == "done")
             .order_by(StoredResult.ts.desc(), StoredResult.id.desc()).limit(scan))
    chosen: Dict[str, SelectedConfiguration] = {}
    with store.session() as session:
        for row in session.scalars(query):
            if row.device_id in chosen:
                continue
            selection = lookup(row.document(), "report", "selection")
            models = lookup(selection, "key", "models")
            choice = lookup(selection, "choice")
            if not isinstance(models, dict) or model_sha256 not in models.values() or not isinstance(choice, dict):
                continue
            chosen[row.device_id] = SelectedConfiguration(
                row.device_id, row.command_id, row.ts, text(choice.get("backend"), 32),
                text(choice.get("precision"), 16), integer(choice.get("threads")), text(choice.get("model"), 64),
                number(choice.get("p50_ms")), number(choice.get("top1")), text(choice.get("stability"), 16))
    return sorted(chosen.values(), key=lambda item: item.device_id)


def compare_boards(store: Store, model_sha256: str) -> List[BoardComparison]:
    """For one model file (by sha256): each board's latest successful measurement per configuration (kept by
    ingest in `latest_measurements`), ordered by board model, device and configuration."""
    columns = [Measurement.id.label("measurement_id") if item.name == "measurement_id"
               else getattr(Measurement, item.name) for item in fields(BoardComparison)]
    query = (select(*columns).join(LatestMeasurement, LatestMeasurement.measurement_id == Measurement.id)
             .where(LatestMeasurement.model_sha256 == model_sha256).order_by(*CONFIGURATION))
    with store.session() as session:
        return [BoardComparison(**row._mapping) for row in session.execute(query)]


def spread(rows: Sequence[BoardComparison]) -> List[Spread]:
    """Min, median and max p50 across the boards of each board model, per configuration (rows without a
    p50 are left out)."""
    groups: Dict[Tuple[Optional[str], Optional[str], Optional[str], Optional[int], Optional[str], Optional[int]],
                 List[float]] = {}
    for row in rows:
        if row.p50_ms is not None:
            key = (row.board_model, row.backend, row.precision, row.threads, row.runtime_version, row.batch)
            groups.setdefault(key, []).append(row.p50_ms)
    return [Spread(model, backend, precision, threads, version, batch, len(values), min(values),
                   statistics.median(values), max(values))
            for (model, backend, precision, threads, version, batch), values in groups.items()]


def rejected_counts(store: Store) -> Dict[str, int]:
    """How many messages ingest rejected, by code (`too_large`, `invalid_json`, `device_mismatch`, ...)."""
    with store.session() as session:
        rows = session.execute(select(RejectedMessage.code, func.count()).group_by(RejectedMessage.code))
        return {code: count for code, count in rows}
