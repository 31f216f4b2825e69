"""Fixtures of the coordinator's tests: every store test runs on a real SQLite file and on a real
PostgreSQL server (Debian's package, started once per session), and ingest is fed real messages — the
agent's own message classes and encoder around real reports of `bench` runs on models/digits: one from
the CLI on this machine, two in-process runs that describe themselves as a captured Jetson Orin Nano."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("sqlalchemy", reason="the coordinator extra (SQLAlchemy, Alembic, psycopg) is not installed")

from support.broker import Broker  # noqa: E402
from support.cli import QUICK, run_cli  # noqa: E402
from support.fleet import ORIN, RealReports  # noqa: E402
from support.postgres import PostgresServer, postgres_bin  # noqa: E402

from agent.device.detect import device_section  # noqa: E402
from agent.fleet.store.database import Store, open_store  # noqa: E402
from agent.jobs.measure import run_measure  # noqa: E402
from agent.measure.plan import MeasureRequest  # noqa: E402


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto on 127.0.0.1 (tests that need one without its own fixture)."""
    with Broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped and removed after it."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file in tmp_path, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "coordinator.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store at `store_url`, migrated to head."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def real(digits: Path) -> RealReports:
    """Run the benches and `info` once per session."""
    bench = run_cli("bench", str(digits), "--backend", "onnxruntime,tflite", *QUICK, "--eval-limit", "20", "--json")
    assert bench.code == 0, bench.stderr
    info = run_cli("info", "--json")
    assert info.code == 0, info.stderr
    request = MeasureRequest(str(digits), backends=["tflite"], precisions=["fp32"], iterations=5, min_seconds=0,
                             eval_limit=20)
    orin = [[report.to_dict() for report in run_measure(request, device_section(str(ORIN)))] for _ in range(2)]
    return RealReports(bench.json(), orin, info.json())
