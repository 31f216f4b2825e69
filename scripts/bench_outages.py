#!/usr/bin/env python3
"""Database outages under a simulated fleet (scripts/simulate_fleet.py): mid-stream, PostgreSQL is stopped for 30 s,
and the SQLite file is locked by another writer for 30 s. Prints, per database: results sent and stored, lost
(must be 0), what the coordinator said (its `database_outage` alerts on MQTT, `edge_fleet_database_up` and
`edge_fleet_messages_waiting` during the outage, the outage counters after) and how long after it the backlog was
stored (a result stored within a second of its making again).

    .venv/bin/python scripts/bench_outages.py                        # 200 boards, 50 results/s, 30 s outages
    .venv/bin/python scripts/bench_outages.py --outage-s 10 --database sqlite
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_dashboard  # noqa: E402
import bench_fleet  # noqa: E402
import simulate_fleet  # noqa: E402
from sqlalchemy import select  # noqa: E402
from support.agent import mqtt_settings  # noqa: E402
from support.broker import Broker  # noqa: E402
from support.coordinator import CoordinatorProcess, stored_results, wait_for  # noqa: E402
from support.outages import postgres_stopped, sqlite_locked  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402

from agent.fleet.client import Coordinator  # noqa: E402
from agent.fleet.store.database import Store, open_store  # noqa: E402
from agent.fleet.store.models import StoredResult  # noqa: E402

CAUGHT_UP_S = 1.0  # a result stored this soon after its board made it: no backlog left


def metrics(service: CoordinatorProcess) -> Dict[str, float]:
    """The unlabelled metrics /metrics serves now."""
    values = {}
    for line in service.api.text("/metrics").splitlines():
        if line.startswith("edge_fleet_") and "{" not in line:
            name, value = line.split()[:2]
            values[name] = float(value)
    return values


def newest_lag_s(store: Store, since: datetime) -> float:
    """How long the result stored last (and after `since`) waited between its board and the database (its
    `received_at` less its `ts`): under a second again once the results queued during an outage are stored (they
    come in order)."""
    with store.session() as session:
        newest = session.execute(select(StoredResult.ts, StoredResult.received_at)
                                 .where(StoredResult.received_at >= since)
                                 .order_by(StoredResult.id.desc()).limit(1)).one_or_none()
    return (newest.received_at - newest.ts).total_seconds() if newest else float("inf")


def outage(kind: str, url: str, server: Any) -> Any:
    """PostgreSQL stopped, or the SQLite file locked by another writer, for a `with` block."""
    return postgres_stopped(server) if kind == "postgresql" else sqlite_locked(Path(url))


def run(kind: str, url: str, server: Any, folder: Path, reports: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """One outage under load; what was measured."""
    devices = [f"sim-{index:04d}" for index in range(args.boards)]
    passwords, acl = bench_fleet.broker_files(folder, devices, ("coordinator", "dashboard"))
    figures: Dict[str, Any] = {"database": kind}
    with Broker(folder / "broker", password_file=passwords, acl_file=acl,
                extra_config="max_queued_messages 0\nmax_inflight_messages 100") as broker:
        service = CoordinatorProcess(folder / "coordinator", broker, url, settings={
            "mqtt": {"username": "coordinator", "password": bench_fleet.PASSWORD}}).start()
        alerts: List[Dict[str, Any]] = []
        try:
            with Coordinator(mqtt_settings(broker, password=bench_fleet.PASSWORD), username="dashboard") as watcher:
                watcher.subscribe("edge/coordinator/alerts")
                duration = args.before_s + args.outage_s + args.after_s
                fleet = bench_fleet.Simulation(broker, reports, "sim", args.boards, "--rate", str(args.rate),
                                               "--duration", str(duration), "--telemetry", "30", "--processes", "2")
                time.sleep(args.before_s)
                with outage(kind, url, server):
                    started = time.monotonic()
                    wait_for("the outage noticed", lambda: metrics(service).get("edge_fleet_database_up") == 0,
                             timeout=args.outage_s + 30)
                    figures["noticed_s"] = time.monotonic() - started
                    time.sleep(max(0.0, args.outage_s - figures["noticed_s"]))
                    figures["waiting"] = metrics(service).get("edge_fleet_messages_waiting", 0)
                back, back_at = time.monotonic(), datetime.now(timezone.utc)
                store = open_store(url)
                wait_for("the backlog stored", lambda: newest_lag_s(store, back_at) < CAUGHT_UP_S, timeout=600,
                         every=0.1)
                figures["catch_up_s"] = time.monotonic() - back
                sent = bench_fleet.acked(fleet.summary(timeout=duration + 120))
                wait_for("everything stored", lambda: stored_results(store) >= sent, timeout=600)
                stored = stored_results(store)
                store.close()
                time.sleep(1)
                while not watcher.received.empty():
                    alerts.append(json.loads(watcher.received.get()[1]))
            after = metrics(service)
        finally:
            service.kill()
    figures.update(sent=len(sent), stored=len(stored & sent), lost=len(sent - stored), alerts=alerts,
                   outages=after.get("edge_fleet_database_outages_total"),
                   outage_s=after.get("edge_fleet_database_outage_seconds_total"))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="results/s the fleet publishes")
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--before-s", type=float, default=10.0)
    parser.add_argument("--after-s", type=float, default=10.0)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--reports", type=Path, help="real reports saved by an earlier run (else made now)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-outages-") as folder:
        reports = args.reports or Path(folder) / "reports.json"
        if not reports.exists():
            reports.write_text(json.dumps(simulate_fleet.real_reports()))
        for kind in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
            work = Path(folder) / kind
            work.mkdir()
            if kind == "sqlite":
                with bench_dashboard.database(kind, work) as url:
                    rows.append(run(kind, url, None, work, reports, args))
            else:
                with PostgresServer() as server:
                    rows.append(run(kind, server.new_database(), server, work, reports, args))
    print(f"\nDatabase outages of {args.outage_s:.0f} s under {args.boards} simulated boards at {args.rate:.0f} "
          "results/s (scripts/bench_outages.py)")
    for row in rows:
        what = "PostgreSQL stopped" if row["database"] == "postgresql" else "SQLite locked by another writer"
        print(f"\n[{row['database']}] {what}")
        print(f"  results sent {row['sent']}, stored {row['stored']}, lost {row['lost']}   "
              f"{'ok' if row['lost'] == 0 else 'LOST'}")
        print(f"  noticed after {row['noticed_s']:.1f} s; {row['waiting']:.0f} messages waiting (unacknowledged) at "
              f"its end; its backlog stored {row['catch_up_s']:.1f} s after it ended (a result stored within "
              f"{CAUGHT_UP_S:.0f} s of its making again)")
        print(f"  metrics after: edge_fleet_database_outages_total {row['outages']}, "
              f"edge_fleet_database_outage_seconds_total {row['outage_s']}")
        outages = [alert for alert in row["alerts"] if alert.get("kind") == "database_outage"]
        for alert in outages:
            print(f"  alert database_outage {alert.get('state')}: {alert.get('message')}")
        print(f"  (and {len(row['alerts']) - len(outages)} regression alerts on the simulator's outliers)")
    return 0 if all(row["lost"] == 0 and [alert["state"] for alert in row["alerts"] if alert.get("kind") ==
                                          "database_outage"] == ["open", "resolved"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
