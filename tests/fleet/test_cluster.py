"""Several coordinators on one PostgreSQL share ingest through MQTT 5 shared subscriptions, on a real Mosquitto
with the coordinators as real processes: each result is stored once and both take part; a coordinator SIGKILLed
mid-stream loses nothing (the other carries on; what the killed one had not acknowledged waits in its broker
session and is stored, once, when it is back)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest
from support.agent import coordinator
from support.broker import NEEDS_MOSQUITTO, Broker
from support.coordinator import CoordinatorProcess, ingested, stored_results, wait_for
from support.fleet import RealReports, publish_results
from support.postgres import PostgresServer

from agent.fleet.service import client_id, subscriptions
from agent.fleet.settings import load
from agent.fleet.store.database import Store, open_store

pytestmark = [NEEDS_MOSQUITTO]
BOARDS = [f"board-{index}" for index in range(8)]
Cluster = Tuple[Store, List[CoordinatorProcess]]


@pytest.fixture
def cluster(tmp_path: Path, broker: Broker, postgres: PostgresServer) -> Iterator[Cluster]:
    """Two coordinators in one share group on one new PostgreSQL database; the database and them."""
    url = postgres.new_database()
    store = open_store(url)
    members = [CoordinatorProcess(tmp_path / name, broker, url, settings={
        "cluster": {"share_group": "ingest", "instance": name}}) for name in ("c1", "c2")]
    for member in members:
        member.start()
    wait_for("both subscribed", lambda: all("connected to the broker" in member.log() for member in members))
    yield store, members
    for member in members:
        member.kill()
    store.close()


def test_the_settings_name_a_shared_subscription_and_a_client_id_per_instance(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text('[cluster]\nshare_group = "ingest"\ninstance = "c1"\n')
    config = load(path, environ={})
    assert subscriptions(config) == [f"$share/ingest/edge/+/{kind}" for kind in ("status", "telemetry", "events",
                                                                                   "results")]
    assert client_id(config) == "edge-coordinator-coordinator-c1"
    assert subscriptions(load(None, environ={}))[0] == "edge/+/status"


def test_two_coordinators_store_each_result_once(cluster: Cluster, broker: Broker,
                                                 real: RealReports) -> None:
    store, members = cluster
    sent = _publish(broker, real, 160)
    wait_for("every result stored", lambda: stored_results(store) >= sent, timeout=60)
    assert stored_results(store) == sent
    stored = [ingested(member, "stored") for member in members]
    assert all(count > 0 for count in stored), stored  # both took part
    assert sum(stored) == len(sent), stored  # and each message went to one of them
    assert sum(ingested(member, "duplicate") for member in members) == 0


def test_a_killed_coordinator_loses_nothing(cluster: Cluster, broker: Broker,
                                            real: RealReports) -> None:
    store, (first, second) = cluster
    sent: Set[Tuple[str, str]] = set()
    stream = threading.Thread(target=lambda: sent.update(_publish(broker, real, 300, every_s=0.01)))
    stream.start()
    wait_for("the stream under way", lambda: len(stored_results(store)) >= 40, timeout=60, every=0.05)
    first.kill()  # SIGKILL: mid-batch, some stored but unacknowledged, some delivered and not stored
    before = ingested(second, "stored")
    wait_for("the other carries on", lambda: ingested(second, "stored") > before + 20, timeout=60, every=0.1)
    stream.join(timeout=120)
    first.start()  # as systemd restarts it: its broker session hands it what it had not acknowledged
    wait_for("every result stored", lambda: stored_results(store) >= sent, timeout=90)
    assert stored_results(store) == sent and len(sent) == 300


def _publish(broker: Broker, real: RealReports, count: int, every_s: float = 0.0) -> Set[Tuple[str, str]]:
    with coordinator(broker) as fleet:
        return publish_results(fleet, BOARDS, real.host, count, every_s)
