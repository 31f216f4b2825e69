"""The coordinator's Prometheus metrics, served at `/metrics` (docs/coordinator.md, "HTTP API and metrics").

A collector on its own registry reads the store at each scrape: boards by state, fleet-job boards by state,
open alerts, rejected messages by code, and the latest p50/p99 of every board × model × configuration (none of
them while the database is unreachable: the scrape still answers). The service counts what ingest made of each
message (`ingested`) and the database's outages (`database_down`, `database_back`) on the same registry, and
says how many messages wait for it (`waiting`).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from agent.fleet.store.database import Store
from agent.fleet.store.models import Alert, Board, FleetJobBoard, Measurement, RejectedMessage

_log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_LABELS = ("device", "board_model", "model", "model_sha256", "backend", "precision", "threads",
                  "runtime_version", "batch")


class StoreCollector(Collector):
    """Gauges read from the store when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        """The fleet as it stands now (nothing while the database is unreachable)."""
        try:
            yield from list(self._read())
        except SQLAlchemyError as error:
            _log.debug("metrics without the store's gauges: %s", error)

    def _read(self) -> Iterator[Metric]:
        with self.store.session() as session:
            boards = GaugeMetricFamily("edge_fleet_boards", "Boards by state (online/offline/unknown)",
                                       labels=["state"])
            counts = dict(session.execute(select(Board.state, func.count()).group_by(Board.state)).all())
            for state in ("online", "offline"):
                boards.add_metric([state], counts.pop(state, 0))
            boards.add_metric(["unknown"], sum(counts.values()))
            yield boards
            job_boards = GaugeMetricFamily("edge_fleet_job_boards", "Boards of fleet jobs by state", labels=["state"])
            for state, count in session.execute(select(FleetJobBoard.state, func.count())
                                                .group_by(FleetJobBoard.state)):
                job_boards.add_metric([state], count)
            yield job_boards
            open_alerts = session.scalar(select(func.count()).select_from(Alert).where(Alert.state == "open"))
            yield GaugeMetricFamily("edge_fleet_alerts_open", "Regression alerts not acknowledged", value=open_alerts)
            rejected = GaugeMetricFamily("edge_fleet_rejected_messages", "Messages ingest rejected, by code "
                                         "(kept in the database)", labels=["code"])
            for code, count in session.execute(select(RejectedMessage.code, func.count())
                                               .group_by(RejectedMessage.code)):
                rejected.add_metric([code], count)
            yield rejected
            yield from self._latency(session)

    def _latency(self, session: object) -> Iterator[Metric]:
        """p50 and p99 of the latest successful measurement of each board × model × configuration."""
        key = (Measurement.device_id, Measurement.model_sha256, Measurement.backend, Measurement.precision,
               Measurement.threads, Measurement.runtime_version, Measurement.batch)
        latest = func.row_number().over(partition_by=key, order_by=(Measurement.ts.desc(),
                                                                    Measurement.id.desc())).label("latest")
        ranked = select(Measurement, latest).where(Measurement.status == "ok", Measurement.p50_ms.is_not(None)) \
            .subquery()
        rows = session.execute(select(ranked).where(ranked.c.latest == 1))  # type: ignore[attr-defined]
        p50 = GaugeMetricFamily("edge_fleet_latency_p50_ms", "Latest median latency (ms)", labels=LATENCY_LABELS)
        p99 = GaugeMetricFamily("edge_fleet_latency_p99_ms", "Latest 99th-percentile latency (ms)",
                                labels=LATENCY_LABELS)
        for row in rows:
            labels = [row.device_id, row.board_model or "", row.model_name or "", (row.model_sha256 or "")[:12],
                      row.backend or "", row.precision or "", str(row.threads or ""), row.runtime_version or "",
                      str(row.batch or "")]
            p50.add_metric(labels, row.p50_ms)
            if row.p99_ms is not None:
                p99.add_metric(labels, row.p99_ms)
        yield p50
        yield p99


class CoordinatorMetrics:
    """The registry `/metrics` serves: the store's gauges and the service's ingest counter."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(store))
        self._ingested = Counter("edge_fleet_messages_ingested", "Messages from boards, by what ingest made of "
                                 "them (stored/duplicate/seen/rejected)", ["outcome"], registry=self.registry)
        for outcome in ("stored", "duplicate", "seen", "rejected"):
            self._ingested.labels(outcome)
        self._up = Gauge("edge_fleet_database_up", "1 while the coordinator can write to its database, 0 during "
                         "an outage (messages then wait unacknowledged)", registry=self.registry)
        self._up.set(1)
        self._outages = Counter("edge_fleet_database_outages", "Times the database became unreachable",
                                registry=self.registry)
        self._outage_s = Counter("edge_fleet_database_outage_seconds", "Seconds the database was unreachable "
                                 "(counted when each outage ends)", registry=self.registry)
        self._waiting = Gauge("edge_fleet_messages_waiting", "Messages received and not yet stored (not "
                              "acknowledged to the broker)", registry=self.registry)

    def waiting(self, count: Callable[[], float]) -> None:
        """Read the number of messages waiting from `count` at each scrape."""
        self._waiting.set_function(count)

    def database_down(self) -> None:
        """An outage began."""
        self._up.set(0)
        self._outages.inc()

    def database_back(self, seconds: float) -> None:
        """The outage that began `seconds` ago ended."""
        self._up.set(1)
        self._outage_s.inc(seconds)

    def ingested(self, outcome: str) -> None:
        """Count one message by its ingest outcome."""
        self._ingested.labels(outcome).inc()

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)
