"""agent/fleet/store/database.py: open_store on SQLite files and PostgreSQL URLs, its errors, UTC times."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from support.broker import free_port

from agent.errors import StoreError
from agent.fleet.store.database import Store, database_url, insert_rows, open_store
from agent.fleet.store.models import Board, RejectedMessage


def test_a_path_opens_one_sqlite_file_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = open_store(tmp_path / "fleet.db")
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.close()
    tables = sqlite3.connect(tmp_path / "fleet.db").execute("SELECT name FROM sqlite_master WHERE type='table'")
    assert {"alembic_version", "boards", "results", "measurements", "telemetry", "rejected"} <= {r[0] for r in tables}


def test_urls_name_their_driver() -> None:
    assert database_url("sqlite:////var/lib/c.db").drivername == "sqlite"
    assert database_url("c.db").database == str(Path("c.db").resolve())
    assert database_url("postgresql://u@h:5/db").drivername == "postgresql+psycopg"
    with pytest.raises(StoreError, match="only SQLite and PostgreSQL"):
        database_url("mysql://u@h/db")
    with pytest.raises(StoreError, match="bad database URL"):
        database_url("postgresql://u@h:notaport/db")


def test_an_unreachable_postgresql_is_one_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open the coordinator database"):
        open_store(f"postgresql://test@127.0.0.1:{free_port()}/none?connect_timeout=2")


def test_a_schema_newer_than_the_migrations_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path / "fleet.db").close()
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="does not know"):
        open_store(tmp_path / "fleet.db")


def test_reopening_keeps_the_data_and_times_come_back_in_utc(store_url: str) -> None:
    seen = datetime(2026, 12, 1, 13, 0, tzinfo=timezone.utc)
    store = open_store(store_url)
    with store.session() as session:
        session.add(Board(device_id="b1", last_seen=seen.astimezone(timezone.utc), groups=["lab"]))
    store.close()
    again: Store = open_store(store_url)
    with again.session() as session:
        board = session.get(Board, "b1")
        assert board is not None and board.last_seen == seen and board.last_seen.tzinfo == timezone.utc
        assert board.groups == ["lab"]
    again.close()


def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"), store.session() as session:
        session.add(Board(device_id="b1", last_seen=datetime(2026, 12, 1), groups=[]))


def test_inserted_rows_get_their_own_ids_in_order_and_after_those_already_there(store: Store) -> None:
    table: Any = RejectedMessage.__table__
    at = datetime(2026, 12, 1, 13, 0, tzinfo=timezone.utc)
    with store.session() as session:
        session.add(RejectedMessage(received_at=at, topic="first", code="c", reason="r", size=0))
    rows = [{"received_at": at, "topic": f"t{index}", "code": "c", "reason": f"r{index}", "size": 0}
            for index in (5, 3, 9, 1)]
    with store.session() as session:
        first = session.scalars(select(RejectedMessage.id)).one()
        ids = insert_rows(session, table, rows)
        session.add(RejectedMessage(received_at=at, topic="after", code="c", reason="r", size=0))
    with store.session() as session:
        stored = {row.id: row.topic for row in session.scalars(select(RejectedMessage))}
    assert len(set(ids)) == 4 and min(ids) > first
    assert [stored[id_] for id_ in ids] == ["t5", "t3", "t9", "t1"]
    assert max(stored) > max(ids) and stored[max(stored)] == "after"  # the table's own numbering carries on
