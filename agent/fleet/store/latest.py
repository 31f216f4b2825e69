"""The latest measurement of each configuration (`LatestMeasurement`): a configuration is one model file on one
board with one board model, backend, precision, thread count, runtime version and batch size, and its latest is
the successful measurement with the newest board `ts` (then the highest id). Ingest calls `record` for every new
result's measurements in the result's transaction; the upsert is atomic on both databases, so two coordinators
storing results of one configuration at once leave the newer one (docs/coordinator.md, "Comparing boards").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Iterable, Optional

from sqlalchemy import and_, or_
from sqlalchemy.orm import Session

from agent.fleet.store.database import dialect_insert
from agent.fleet.store.models import LatestMeasurement, Measurement


def configuration_key(model_sha256: Optional[str], board_model: Optional[str], device_id: str,
                      backend: Optional[str], precision: Optional[str], threads: Optional[int],
                      runtime_version: Optional[str], batch: Optional[int]) -> str:
    """The digest a configuration is kept under (its fields may be null, which a unique key would not match)."""
    fields = [model_sha256, board_model, device_id, backend, precision, threads, runtime_version, batch]
    return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()


def key_of(row: Measurement) -> str:
    """A stored measurement's configuration key."""
    return configuration_key(row.model_sha256, row.board_model, row.device_id, row.backend, row.precision,
                             row.threads, row.runtime_version, row.batch)


def record(session: Session, measurements: Iterable[Measurement]) -> None:
    """Make each successful measurement (stored, so it has its id) the latest of its configuration unless a
    newer one is already recorded: one upsert, of the newest of each configuration among `measurements` (one
    statement may not touch a row twice)."""
    newest: Dict[str, Measurement] = {}
    for row in measurements:
        if row.status == "ok" and row.model_sha256:
            key = key_of(row)
            if key not in newest or (row.ts, row.id) > (newest[key].ts, newest[key].id):
                newest[key] = row
    if not newest:
        return
    rows = [{"key": key, "model_sha256": row.model_sha256, "device_id": row.device_id, "measurement_id": row.id,
             "ts": row.ts} for key, row in newest.items()]
    table: Any = LatestMeasurement.__table__
    statement = dialect_insert(session, table)
    newer = or_(statement.excluded.ts > table.c.ts,
                and_(statement.excluded.ts == table.c.ts, statement.excluded.measurement_id > table.c.measurement_id))
    session.execute(statement.on_conflict_do_update(
        index_elements=[table.c.key], where=newer,
        set_={"measurement_id": statement.excluded.measurement_id, "ts": statement.excluded.ts}), rows)
