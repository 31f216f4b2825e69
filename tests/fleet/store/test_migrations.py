"""agent/fleet/store/migrations: on both databases, the migrated schema is exactly the models' (Alembic's
autogenerate comparison finds nothing to do), the initial revision goes down and up again, and 0003 fills the
latest measurement of each configuration from the measurements already stored."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from support.fleet import RealReports, bench_result

from agent.fleet.ingest import ingest
from agent.fleet.queries import compare_boards
from agent.fleet.store.database import MIGRATIONS, Store
from agent.fleet.store.latest import configuration_key
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


def test_0003_finds_the_latest_of_what_was_stored_before_it(store: Store, real: RealReports) -> None:
    faster = json.loads(json.dumps(real.orin[0]))
    faster[0]["latency"]["p50_ms"] = 0.001
    ingest(store, *bench_result("orin-1", faster, "c-later", seconds=100))  # arrives first, made last
    ingest(store, *bench_result("orin-1", real.orin[0], "c-earlier", seconds=5))
    ingest(store, *bench_result("orin-2", real.orin[1], "c-other", seconds=50))
    sha = real.orin[0][0]["model"]["sha256"]
    before = {row.device_id: row.p50_ms for row in compare_boards(store, sha)}
    with store.engine.begin() as connection:
        command.downgrade(_config(connection), "0002")
        assert "latest_measurements" not in inspect(connection).get_table_names()
        command.upgrade(_config(connection), "head")
    after = {row.device_id: row.p50_ms for row in compare_boards(store, sha)}
    assert after == before and after["orin-1"] == 0.001
    fields = (sha, "a board", "orin-1", "tflite", "fp32", 4, "2.3.0", None)
    assert revision_0003().configuration_key(*fields) == configuration_key(*fields)  # the live code keys alike


def revision_0003() -> Any:
    """The 0003 migration module (a file of the migrations folder, not a package module)."""
    path = MIGRATIONS / "versions" / "0003_latest_measurements.py"
    spec = importlib.util.spec_from_file_location("revision_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
