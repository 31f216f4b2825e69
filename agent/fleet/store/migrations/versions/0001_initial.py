"""The initial schema: boards, their runtimes, results, measurements, telemetry, rejected messages

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.fleet.store.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table("boards",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("state_since", UtcDateTime(), nullable=True),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
        sa.Column("agent_version", sa.Text(), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=True),
        sa.Column("hardware_at", UtcDateTime(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("board_model", sa.Text(), nullable=True),
        sa.Column("jetpack", sa.Text(), nullable=True),
        sa.Column("l4t", sa.Text(), nullable=True),
        sa.Column("soc", sa.Text(), nullable=True),
        sa.Column("cpu_model", sa.Text(), nullable=True),
        sa.Column("cpu_arch", sa.Text(), nullable=True),
        sa.Column("cpu_cores", sa.Integer(), nullable=True),
        sa.Column("memory_total_mib", sa.Integer(), nullable=True),
        sa.Column("os", sa.Text(), nullable=True),
        sa.Column("kernel", sa.Text(), nullable=True),
        sa.Column("cuda", sa.Text(), nullable=True),
        sa.Column("tensorrt", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("device_id"))
    op.create_index("ix_boards_board_model", "boards", ["board_model"])
    op.create_table("rejected",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_rejected_code", "rejected", ["code"])
    op.create_index("ix_rejected_received_at", "rejected", ["received_at"])
    op.create_table("board_runtimes",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["boards.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "name"))
    op.create_table("results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("cmd", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["boards.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "command_id", name="uq_results_device_command"))
    op.create_index("ix_results_device_id", "results", ["device_id"])
    op.create_index("ix_results_ts", "results", ["ts"])
    op.create_table("telemetry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("job", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["boards.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_telemetry_device_received", "telemetry", ["device_id", "received_at"])
    op.create_table("measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("board_model", sa.Text(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("model_format", sa.String(length=16), nullable=True),
        sa.Column("backend", sa.String(length=32), nullable=True),
        sa.Column("runtime_version", sa.Text(), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.Column("throughput_per_s", sa.Float(), nullable=True),
        sa.Column("peak_rss_mb", sa.Float(), nullable=True),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top1_agreement", sa.Float(), nullable=True),
        sa.Column("stability", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["result_id"], ["results.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_measurements_configuration", "measurements",
                    ["model_sha256", "board_model", "backend", "precision", "threads", "runtime_version"])
    op.create_index("ix_measurements_device_id", "measurements", ["device_id"])
    op.create_index("ix_measurements_result_id", "measurements", ["result_id"])


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("measurements")
    op.drop_table("telemetry")
    op.drop_table("results")
    op.drop_table("board_runtimes")
    op.drop_table("rejected")
    op.drop_table("boards")
