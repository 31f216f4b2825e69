"""Alembic's environment for the coordinator's migrations: `open_store` hands it an open connection
(`config.attributes["connection"]`); the models' metadata is the target autogenerate compares with."""

from __future__ import annotations

from alembic import context

from agent.fleet.store.models import Base

context.configure(connection=context.config.attributes["connection"], target_metadata=Base.metadata,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
