"""Open the coordinator's database and bring its schema to the newest migration.

`open_store(url)` takes a file path or `sqlite:///PATH` (the embedded default: one file, WAL journal,
foreign keys on) or a PostgreSQL URL (`postgresql://` is driven by psycopg 3), runs the package's
Alembic migrations up to `head`, and returns a `Store`: the engine and a session factory. A database
that cannot be reached, or whose schema is newer than this edge-agent's migrations, is a `StoreError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List, Union

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Table, create_engine, event, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from agent.errors import StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Store:
    """An open coordinator database: its engine and sessions that expire nothing on commit."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back when it raises."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def dialect_insert(session: Session, table: Table) -> Any:
    """An INSERT into `table` in the session's own dialect (SQLite or PostgreSQL): what `ON CONFLICT` needs."""
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_rows(session: Session, table: Table, rows: List[Dict[str, Any]]) -> List[int]:
    """Insert `rows` into `table` (its primary key is `id`), returning their ids in the rows' order. PostgreSQL
    takes ids from the table's sequence first and then sends the rows as one pipelined batch of one short
    statement: an `INSERT ... RETURNING` of many rows is one long statement whose parsing costs more than the
    insert. SQLite inserts them with `RETURNING`, in order."""
    if session.get_bind().dialect.name != "postgresql":
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(session.scalars(statement, rows))
    reserve = select(func.nextval(func.pg_get_serial_sequence(table.name, "id")))
    ids: List[int] = list(session.scalars(reserve.select_from(func.generate_series(1, len(rows)))))
    session.execute(insert(table), [{**row, "id": id_} for row, id_ in zip(rows, ids)])
    return ids


def database_url(target: Union[str, Path]) -> URL:
    """The SQLAlchemy URL of a file path or URL: a path is SQLite; `postgresql://` gets the psycopg 3 driver."""
    text = str(target)
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).resolve()))
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as error:
        raise StoreError(f"bad database URL {text!r}: {error}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"database URL {url.render_as_string(hide_password=True)!r}: only SQLite and PostgreSQL "
                         "are supported")
    return url


def open_store(target: Union[str, Path], sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Store:
    """Open (creating or upgrading its schema to the newest migration) the database at a path or URL. On SQLite,
    a write waits up to `sqlite_busy_timeout_s` for another writer before it fails ("database is locked")."""
    url = database_url(target)
    engine = create_engine(url)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", partial(_sqlite_pragmas, int(sqlite_busy_timeout_s * 1000)))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as error:
        engine.dispose()
        raise StoreError(f"cannot open the coordinator database "
                         f"{url.render_as_string(hide_password=True)}: {error.orig}") from None
    except CommandError as error:
        engine.dispose()
        raise StoreError(f"the coordinator database {url.render_as_string(hide_password=True)} has a schema this "
                         f"edge-agent does not know (written by a newer one?): {error}") from None
    return Store(engine, sessionmaker(engine, expire_on_commit=False))


def _sqlite_pragmas(busy_timeout_ms: int, connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()
