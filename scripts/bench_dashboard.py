#!/usr/bin/env python3
"""How fast the dashboard's pages answer with a large fleet in the database: 1,000 boards and 100,000 results by
default (scripts/fleet_fill.py), on SQLite and on PostgreSQL, served by a real uvicorn and asked over HTTP on
127.0.0.1 with a logged-in session. Prints, per database and page, the median and slowest of the timed requests
(the whole body received) against the target (300 ms), and exits 1 if any median is over it.

    .venv/bin/python scripts/bench_dashboard.py                      # 1,000 boards, 100,000 results, both databases
    .venv/bin/python scripts/bench_dashboard.py --boards 100 --results 5000 --database sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import fleet_fill  # noqa: E402
from sqlalchemy import select  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402

from agent.fleet import jobs, queries  # noqa: E402
from agent.fleet.dashboard import views  # noqa: E402
from agent.fleet.settings import JobSettings  # noqa: E402
from agent.fleet.store.database import Store, open_store  # noqa: E402
from agent.fleet.store.models import Alert, Measurement  # noqa: E402

TARGET_MS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=1000)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--telemetry", type=int, default=30, help="samples per board")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per page (after one warm-up)")
    parser.add_argument("--reports", type=Path, help="real reports saved by an earlier run (else made now)")
    args = parser.parse_args()
    if args.reports and args.reports.exists():
        reports = json.loads(args.reports.read_text())
    else:
        print("running one real bench and one profile of models/digits for the report templates ...", file=sys.stderr)
        reports = fleet_fill.real_reports()
        if args.reports:
            args.reports.write_text(json.dumps(reports))
    rows: List[Tuple[str, str, float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as folder:
        for kind in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
            with database(kind, Path(folder)) as url:
                store = open_store(url)
                started = time.perf_counter()
                devices = fleet_fill.fill(store, reports, args.boards, args.results, args.telemetry)
                _alerts(store, 300)
                view, _ = jobs.create_job(store, "all", "ping", {}, JobSettings(), "edge",
                                          datetime.now(timezone.utc), "bench")
                print(f"{kind}: {args.boards} boards, {args.results} results, {args.boards * args.telemetry} "
                      f"telemetry samples written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
                with fleet_fill.serve_dashboard(store) as (base, cookie):
                    for page in _pages(store, devices, view.id):
                        times, size = _time(base + page, cookie, args.requests)
                        rows.append((kind, page, statistics.median(times), max(times), size))
                        print(f"  {page[:60]:60} {rows[-1][2]:7.1f} ms", file=sys.stderr)
                store.close()
    print(f"\nDashboard pages, {args.boards} boards and {args.results} results; median and slowest of "
          f"{args.requests} requests, whole body, on 127.0.0.1 (target: median <= {TARGET_MS:.0f} ms)")
    print(f"{'database':10} {'page':58} {'median ms':>10} {'max ms':>8} {'KB':>6}  verdict")
    for name, page, median, slowest, size in rows:
        verdict = "ok" if median <= TARGET_MS else "OVER"
        print(f"{name:10} {page[:58]:58} {median:10.1f} {slowest:8.1f} {size / 1024:6.0f}  {verdict}")
    return 0 if all(median <= TARGET_MS for _, _, median, _, _ in rows) else 1


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database of `kind` (sqlite: a file in `folder`; postgresql: a throwaway server's)."""
    if kind == "sqlite":
        yield str(folder / "coordinator.db")
        return
    with PostgresServer() as server:
        yield server.new_database()


def _alerts(store: Store, count: int) -> None:
    """Regression alerts on `count` measurements, as ingest would raise them."""
    now = datetime.now(timezone.utc)
    with store.session() as session:
        for measurement in session.scalars(select(Measurement).where(Measurement.p50_ms.is_not(None))
                                           .order_by(Measurement.id.desc()).limit(count)):
            value = measurement.p50_ms or 1.0
            session.add(Alert(
                kind="regression", state="open", measure="p50_ms", created_at=now, device_id=measurement.device_id,
                result_id=measurement.result_id, measurement_id=measurement.id, board_model=measurement.board_model,
                model_name=measurement.model_name, model_sha256=measurement.model_sha256,
                backend=measurement.backend, precision=measurement.precision, threads=measurement.threads,
                runtime_version=measurement.runtime_version, value=value, baseline=value / 1.5, baseline_count=5,
                limit=value / 1.3, message="p50 is 50% above the baseline median (made for the page-time benchmark)"))


def _pages(store: Store, devices: List[str], job_id: str) -> List[str]:
    """Every page, with the ids of real rows: the largest model, a board, two measurements, a profile result."""
    models = views.models(store)
    largest = max(models, key=lambda model: model.configurations).sha256
    rows = queries.compare_boards(store, largest)
    profile = queries.list_results(store, None, None, "profile", 1)[0]
    middle = devices[len(devices) // 2]
    return ["/", "/?group=lab&state=online", "/?q=board-09", f"/?page={max(1, len(devices) // 200)}",
            f"/boards/{middle}", "/models", f"/models/{largest}",
            f"/compare?a={rows[0].measurement_id}&b={rows[-1].measurement_id}",
            f"/results/{profile.device_id}/{profile.command_id}", "/alerts", "/alerts?state=all", "/jobs",
            f"/jobs/{job_id}", "/api/v1/boards"]


def _time(url: str, cookie: str, count: int) -> Tuple[List[float], int]:
    times, size = [], 0
    for attempt in range(count + 1):
        request = urllib.request.Request(url, headers={"Cookie": cookie})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"{url}: HTTP {response.status}")
        elapsed = (time.perf_counter() - started) * 1000
        if attempt:
            times.append(elapsed)
        size = len(body)
    return times, size


if __name__ == "__main__":
    sys.exit(main())
