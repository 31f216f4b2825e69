"""The latest measurement of each configuration, and results found by command

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

import sqlalchemy as sa
from alembic import op

from agent.fleet.store.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def configuration_key(*fields: Any) -> str:
    """The digest this revision keys a configuration by, frozen here: agent/fleet/store/latest.py must keep
    making the same digest (tests/fleet/store/test_migrations.py compares them)."""
    return hashlib.sha256(json.dumps(list(fields)).encode("utf-8")).hexdigest()


def upgrade() -> None:
    """Apply this revision, and fill the new table from the measurements already stored."""
    latest = op.create_table("latest_measurements",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["measurement_id"], ["measurements.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key"))
    op.create_index("ix_latest_measurements_model_sha256", "latest_measurements", ["model_sha256"])
    op.create_index("ix_results_cmd_ts", "results", ["cmd", "ts"])
    measurements = sa.table("measurements", sa.column("ts", UtcDateTime()), *(sa.column(name) for name in (
        "id", "status", "model_sha256", "board_model", "device_id", "backend", "precision", "threads",
        "runtime_version", "batch")))
    newest: Dict[str, Dict[str, Any]] = {}
    query = (sa.select(measurements).where(measurements.c.status == "ok", measurements.c.model_sha256.is_not(None))
             .order_by(measurements.c.ts, measurements.c.id))
    for row in op.get_bind().execute(query):  # oldest first: the last one seen of each configuration wins
        key = configuration_key(row.model_sha256, row.board_model, row.device_id, row.backend, row.precision,
                                row.threads, row.runtime_version, row.batch)
        newest[key] = {"key": key, "model_sha256": row.model_sha256, "device_id": row.device_id,
                       "measurement_id": row.id, "ts": row.ts}
    if newest:
        op.bulk_insert(latest, list(newest.values()))


def downgrade() -> None:
    """Undo this revision."""
    op.drop_index("ix_results_cmd_ts", table_name="results")
    op.drop_index("ix_latest_measurements_model_sha256", table_name="latest_measurements")
    op.drop_table("latest_measurements")
