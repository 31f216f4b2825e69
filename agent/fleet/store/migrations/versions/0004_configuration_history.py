"""A configuration's measurements in time order: the regression baseline reads its newest ones from the index

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BEFORE = ["model_sha256", "board_model", "backend", "precision", "threads", "runtime_version"]


def upgrade() -> None:
    """Apply this revision: the configuration index gains `batch` and `ts`, so a baseline is a range scan."""
    op.drop_index("ix_measurements_configuration", table_name="measurements")
    op.create_index("ix_measurements_configuration", "measurements", [*BEFORE, "batch", "ts"])


def downgrade() -> None:
    """Undo this revision."""
    op.drop_index("ix_measurements_configuration", table_name="measurements")
    op.create_index("ix_measurements_configuration", "measurements", BEFORE)
