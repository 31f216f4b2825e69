"""Database outages for tests and scripts/bench_outages.py: a PostgreSQL server stopped, or a SQLite file whose
write lock another writer holds, for the length of a `with` block."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

from support.postgres import PostgresServer


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another writer holds the SQLite file's write lock."""
    other = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextlib.contextmanager
def postgres_stopped(server: PostgresServer) -> Iterator[None]:
    """The PostgreSQL server is down."""
    server.pause()
    try:
        yield
    finally:
        server.resume()
