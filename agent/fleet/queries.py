"""Questions asked of the coordinator's store: how one model runs across the fleet (`compare_boards`, a
row per board and configuration with its latest measures), how far boards of the same model spread
(`spread`), and how many messages were rejected, by code (`rejected_counts`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import func, select

from agent.fleet.store.database import Store
from agent.fleet.store.models import Measurement, RejectedMessage

# A configuration on one board: what a comparison row stands for (the batch size too, when it varies).
CONFIGURATION = (Measurement.board_model, Measurement.device_id, Measurement.backend, Measurement.precision,
                 Measurement.threads, Measurement.runtime_version, Measurement.batch)


@dataclass(frozen=True)
class BoardComparison:
    """The latest successful measurement of one model on one board in one configuration."""

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


def compare_boards(store: Store, model_sha256: str) -> List[BoardComparison]:
    """For one model file (by sha256): each board's latest successful measurement per configuration,
    ordered by board model, device and configuration."""
    latest = func.row_number().over(partition_by=CONFIGURATION,
                                    order_by=(Measurement.ts.desc(), Measurement.id.desc())).label("latest")
    ranked = (select(Measurement, latest)
              .where(Measurement.model_sha256 == model_sha256, Measurement.status == "ok").subquery())
    columns = [ranked.c[item.name] for item in fields(BoardComparison)]
    query = select(*columns).where(ranked.c.latest == 1).order_by(*(ranked.c[c.key] for c in CONFIGURATION))
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
