"""Regression alerts and fleet jobs with a state per board

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.fleet.store.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table("alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("measure", sa.String(length=32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=False),
        sa.Column("board_model", sa.Text(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("backend", sa.String(length=32), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("runtime_version", sa.Text(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("baseline_count", sa.Integer(), nullable=True),
        sa.Column("limit", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["result_id"], ["results.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["measurement_id"], ["measurements.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("measurement_id", "measure", name="uq_alerts_measurement_measure"))
    op.create_index("ix_alerts_state_created", "alerts", ["state", "created_at"])
    op.create_index("ix_alerts_device_id", "alerts", ["device_id"])
    op.create_index("ix_alerts_result_id", "alerts", ["result_id"])
    op.create_table("fleet_jobs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("cmd", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("deadline", UtcDateTime(), nullable=False),
        sa.Column("offline", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_fleet_jobs_created_at", "fleet_jobs", ["created_at"])
    op.create_table("fleet_job_boards",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["fleet_jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["result_id"], ["results.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("job_id", "device_id"))
    op.create_index("ix_fleet_job_boards_state", "fleet_job_boards", ["state"])


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("fleet_job_boards")
    op.drop_table("fleet_jobs")
    op.drop_table("alerts")
