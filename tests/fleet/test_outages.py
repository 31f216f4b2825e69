"""Database outages under a stream of results, on a real Mosquitto with the coordinator as a real process: its
PostgreSQL stopped, or its SQLite file locked by another writer for longer than `sqlite_busy_timeout_s`. The
messages wait unacknowledged and all land once it is back; a `database_outage` alert on MQTT (open, then
resolved) and the metrics (`edge_fleet_database_up`, `edge_fleet_messages_waiting`, the outage counters) say
what happened. scripts/bench_outages.py does the same for 30 s under a simulated fleet."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest
from support.agent import coordinator
from support.broker import NEEDS_MOSQUITTO, Broker
from support.coordinator import CoordinatorProcess, stored_results, wait_for
from support.fleet import RealReports, publish_results
from support.outages import postgres_stopped, sqlite_locked
from support.postgres import PostgresServer

from agent.fleet.store.database import open_store

pytestmark = [NEEDS_MOSQUITTO]
OUTAGE_S = 4.0


def metric(service: CoordinatorProcess, name: str) -> float:
    """One unlabelled metric's value from /metrics."""
    for line in service.api.text("/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_outage_under_a_stream_loses_nothing_and_is_reported(
        kind: str, tmp_path: Path, broker: Broker, real: RealReports, request: pytest.FixtureRequest) -> None:
    outage: Callable[[], Any]
    if kind == "sqlite":
        url = str(tmp_path / "coordinator.db")
        outage = lambda: sqlite_locked(Path(url))  # noqa: E731
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database()
        outage = lambda: postgres_stopped(server)  # noqa: E731
    service = CoordinatorProcess(tmp_path / "coordinator", broker, url, settings={
        "database": {"sqlite_busy_timeout_s": 0.5}}).start()
    alerts: List[Dict[str, Any]] = []
    sent: Set[Tuple[str, str]] = set()
    try:
        with coordinator(broker) as watcher:
            watcher.subscribe("edge/coordinator/alerts")
            stream = threading.Thread(target=lambda: sent.update(_publish(broker, real, 120, every_s=0.05)))
            stream.start()
            store = open_store(url)
            wait_for("the stream under way", lambda: len(stored_results(store)) >= 10, timeout=60, every=0.05)
            store.close()
            with outage():
                wait_for("the outage noticed", lambda: metric(service, "edge_fleet_database_up") == 0, timeout=30)
                time.sleep(OUTAGE_S)
                assert metric(service, "edge_fleet_messages_waiting") > 0
            stream.join(timeout=120)
            wait_for("the alert resolved", lambda: _alerts(watcher, alerts)[-1:] and
                     alerts[-1]["state"] == "resolved", timeout=60)
        store = open_store(url)
        wait_for("every result stored", lambda: stored_results(store) >= sent, timeout=60)
        assert stored_results(store) == sent and len(sent) == 120
        store.close()
        assert [alert["state"] for alert in alerts] == ["open", "resolved"], alerts
        assert all(alert["kind"] == "database_outage" for alert in alerts)
        assert alerts[1]["duration_s"] >= OUTAGE_S and "nothing was lost" in alerts[1]["message"]
        assert metric(service, "edge_fleet_database_up") == 1
        assert metric(service, "edge_fleet_database_outages_total") == 1
        assert metric(service, "edge_fleet_database_outage_seconds_total") >= OUTAGE_S
        assert metric(service, "edge_fleet_messages_waiting") == 0
        assert service.alive()
    finally:
        service.kill()


def _alerts(watcher: Any, into: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Move the alerts received so far into `into`."""
    while not watcher.received.empty():
        into.append(json.loads(watcher.received.get()[1]))
    return into


def _publish(broker: Broker, real: RealReports, count: int, every_s: float) -> Set[Tuple[str, str]]:
    with coordinator(broker) as board:
        return publish_results(board, ["board-a"], real.host, count, every_s)
