"""agent/fleet/store/migrations: on both databases, the migrated schema is exactly the models' (Alembic's
autogenerate comparison finds nothing to do), and the initial revision goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from agent.fleet.store.database import MIGRATIONS, Store
from agent.fleet.store.models import Base


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_the_migrations_build_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_initial_revision_goes_down_and_up(store: Store) -> None:
    with store.engine.begin() as connection:
        command.downgrade(_config(connection), "base")  # every revision down
        assert inspect(connection).get_table_names() == ["alembic_version"]
        command.upgrade(_config(connection), "head")
        assert set(inspect(connection).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
