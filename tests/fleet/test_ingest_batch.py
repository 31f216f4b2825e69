"""`ingest_batch` stores a batch as storing its messages one by one in arrival order does, on both databases.

One stream of real messages (statuses, telemetry, a fleet job's events and results, an offline board coming
back, a baseline then a regression, an unstable result, a runtime update, a result older than the ones before
it, replays within a batch and across batches, an `info` result, garbage) goes into one store a message at a
time and into another in batches; every table and every outcome must come out the same."""

from __future__ import annotations

import copy
import random
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pytest
from sqlalchemy import select
from support.fleet import RealReports, at, bench_result, status, telemetry, ts, wire
from support.postgres import PostgresServer

from agent.fleet import jobs
from agent.fleet.ingest import IngestSettings, Outcome, Retention, ingest_batch
from agent.fleet.settings import JobSettings, RegressionSettings
from agent.fleet.store import models
from agent.fleet.store.database import Store, open_store
from agent.mqtt.protocol import Event, Result

SETTINGS = IngestSettings(retention=Retention(max_age_s=None, max_count=3),
                          regressions=RegressionSettings(baseline_results=5, min_baseline=3, p50_pct=10.0,
                                                         p99_pct=25.0, top1_points=1.0, mad_k=3.0))
Wire = Tuple[str, bytes]


@pytest.fixture
def batched(store: Store, store_url: str, tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A second empty store on the same kind of database as `store`."""
    if store.engine.dialect.name == "sqlite":
        url = str(tmp_path / "batched.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database()
    opened = open_store(url)
    yield opened
    opened.close()


def _report(real: RealReports, p50: float, stability: str = "stable", version: Any = None) -> Dict[str, Any]:
    item = copy.deepcopy(real.orin[0][0])
    item["latency"]["p50_ms"], item["latency"]["p99_ms"] = p50, 2 * p50
    item["latency"]["stability"]["verdict"] = stability
    if version is not None:
        item["backend"]["version"] = version
    return item


def _stream(real: RealReports, job_id: str) -> List[Wire]:
    """What the boards publish after the job was made (board-c offline then), in arrival order."""
    bench = [_report(real, p50) for p50 in (10.0, 10.3, 9.8, 10.1, 9.9, 10.2)]
    first_done = bench_result("board-a", [bench[0]], "sched-0", seconds=10)
    stream: List[Wire] = [
        wire(Event("board-a", job_id, "accepted", cmd="bench", ts=ts(2))),
        wire(Event("board-b", job_id, "accepted", cmd="bench", ts=ts(2))),
        telemetry("board-a", {"max_temperature_c": 51.0}, seconds=3),
        wire(Event("board-a", job_id, "progress", cmd="bench", progress=0.5, ts=ts(4))),
        wire(Event("board-x", "no-such-job", "accepted", cmd="bench", ts=ts(4))),
        ("edge/board-a/results", b"{not json"),
        first_done,
        *(bench_result("board-a", [report], f"sched-{index}", seconds=10 + 10 * index)
          for index, report in enumerate(bench[1:], start=1)),
        first_done,  # a replay in the same stream
        wire(Result("board-a", job_id, "bench", "done", {"reports": [_report(real, 10.0)]}, ts=ts(70))),
        status("board-c", "online", seconds=71, groups=["shelf"]),
        wire(Event("board-c", job_id, "accepted", cmd="bench", ts=ts(72))),
        telemetry("board-a", {"max_temperature_c": 52.0}, seconds=73),
        telemetry("board-b", {"max_temperature_c": 49.0}, seconds=73),
        bench_result("board-a", [_report(real, 14.0)], "slow", seconds=80),  # a regression
        bench_result("board-a", [_report(real, 30.0, stability="unstable")], "noisy", seconds=85),
        bench_result("board-a", [_report(real, 9.7)], "late", seconds=15),  # older than all but the first
        telemetry("board-a", {"max_temperature_c": 53.0}, seconds=86),
        telemetry("board-a", {"max_temperature_c": 54.0}, seconds=87),
        bench_result("board-a", [_report(real, 10.1, version="9.9.9")], "updated", seconds=90),  # a new runtime
        bench_result("board-a", [_report(real, 10.0, version="9.9.9"), _report(real, 10.4)], "both", seconds=95),
        wire(Result("board-b", job_id, "bench", "failed", None, code="model_error", message="truncated model",
                    ts=ts(96))),
        wire(Result("board-c", job_id, "info", "done", real.host_info, ts=ts(97))),
        wire(Result("board-c", "info-1", "info", "done", real.host_info, ts=ts(98))),
        telemetry("board-c", {"max_temperature_c": 40.0}, seconds=99),
        bench_result("board-a", [_report(real, 14.5)], "slow-again", seconds=100),
        bench_result("board-a", [_report(real, 14.0)], "slow", seconds=80),  # a replay, later
        status("board-b", "offline", seconds=101),
    ]
    return stream


def _split(stream: Sequence[Wire], sizes: str) -> List[List[Wire]]:
    """The stream in batches: one each, all in one, or of random sizes (1 to 9, seeded)."""
    if sizes == "one each":
        return [[item] for item in stream]
    if sizes == "all in one":
        return [list(stream)]
    rng, batches, start = random.Random(sizes), [], 0
    while start < len(stream):
        size = rng.randint(1, 9)
        batches.append(list(stream[start:start + size]))
        start += size
    return batches


def _make_job(store: Store, like: Any = None) -> Any:
    """A bench to all three boards (board-c offline: it waits), or the same job (id and all) as `like`."""
    for device, state, group in (("board-a", "online", "lab"), ("board-b", "online", "lab"),
                                 ("board-c", "offline", "shelf")):
        ingest_batch(store, [status(device, state, groups=[group])], SETTINGS, received_at=at(0))
    if like is None:
        view, _ = jobs.create_job(store, "all", "bench", {"model": "digits"}, JobSettings(timeout_s=7200), "edge",
                                  at(1), "ops")
        return view
    with store.session() as session:
        session.add(models.FleetJob(id=like.id, target=like.target, cmd=like.cmd, args=like.args,
                             created_at=like.created_at, created_by=like.created_by, deadline=like.deadline,
                             offline=like.offline, boards=[
                                 models.FleetJobBoard(device_id=board.device_id, state=board.state, detail=board.detail,
                                               updated_at=board.updated_at) for board in like.boards]))
    return like


def _ingest(store: Store, batches: List[List[Wire]]) -> List[Tuple[Any, ...]]:
    """Each batch received at the moment of its first message's turn (message N at 1000 + N s), so the times
    stored agree however the stream is split; what became of each message, ids left out (they differ between
    stores)."""
    outcomes: List[Outcome] = []
    for batch in batches:
        outcomes += ingest_batch(store, batch, SETTINGS, received_at=at(1000 + len(outcomes)))
    return [(outcome.outcome, outcome.kind, outcome.device, outcome.code, outcome.reason,
             [(send.device_id, send.topic, send.payload) for send in outcome.sends],
             [(alert.kind, alert.state, alert.measure, alert.value, alert.baseline, alert.limit, alert.message)
              for alert in outcome.alerts]) for outcome in outcomes]


def _snapshot(store: Store) -> Dict[str, Any]:
    """Every table by natural keys: results by (device, command id), measurements by their result's and position."""
    with store.session() as session:

        def rows(table: Any) -> List[Any]:
            return list(session.scalars(select(table)))

        keys = {row.id: (row.device_id, row.command_id) for row in rows(models.StoredResult)}
        measured = {row.id: (*keys[row.result_id], row.position) for row in rows(models.Measurement)}

        def plain(row: Any, *leave_out: str) -> Dict[str, Any]:
            return {column.key: getattr(row, column.key) for column in row.__table__.columns
                    if column.key not in ("id", *leave_out)}

        return {
            "boards": {row.device_id: plain(row, "received_at") for row in rows(models.Board)},
            "runtimes": sorted((row.device_id, row.name, row.version) for row in rows(models.BoardRuntime)),
            "results": {keys[row.id]: plain(row) for row in rows(models.StoredResult)},
            "measurements": {measured[row.id]: plain(row, "result_id") for row in rows(models.Measurement)},
            "latest": {row.key: measured[row.measurement_id] for row in rows(models.LatestMeasurement)},
            "alerts": sorted((measured[row.measurement_id], row.kind, row.state, row.measure, row.value,
                              row.baseline, row.baseline_count, row.limit, row.message)
                             for row in rows(models.Alert)),
            "telemetry": sorted((row.device_id, row.ts) for row in rows(models.TelemetrySample)),
            "rejected": sorted((row.topic, row.code, row.reason) for row in rows(models.RejectedMessage)),
            "job": {row.device_id: (row.state, row.progress, row.detail,
                                    keys.get(row.result_id) if row.result_id else None)
                    for row in rows(models.FleetJobBoard)},
        }


@pytest.mark.parametrize("sizes", ["all in one", "seed-1", "seed-2"])
def test_a_batch_is_stored_as_its_messages_one_by_one(store: Store, batched: Store, real: RealReports,
                                                      sizes: str) -> None:
    job = _make_job(store)
    _make_job(batched, like=job)
    stream = _stream(real, job.id)
    one_by_one = _ingest(store, _split(stream, "one each"))
    in_batches = _ingest(batched, _split(stream, sizes))

    reference, batched_tables = _snapshot(store), _snapshot(batched)
    # A batch is received at one moment, so the times of reception differ by design; all else must match.
    for tables in (reference, batched_tables):
        for row in tables["results"].values():
            row.pop("received_at")
        for board in tables["boards"].values():
            board.pop("last_seen"), board.pop("state_since")
    assert in_batches == one_by_one
    for table in reference:
        assert batched_tables[table] == reference[table], table

    # The stream exercises what it is meant to: a fallback past the first answer, a regression, a note, a replay.
    kinds = {(alert[1], alert[3]) for alert in reference["alerts"]}
    assert {("regression", "p50_ms"), ("expected_change", "configuration")} <= kinds
    assert sum(1 for outcome in one_by_one if outcome[0] == "duplicate") == 2
    assert reference["job"]["board-a"][0] == "done" and reference["job"]["board-b"][0] == "failed"
    assert reference["job"]["board-c"][0] == "done" and [send[0] for outcome in one_by_one
                                                         for send in outcome[5]] == ["board-c"]
    assert len([row for row in reference["telemetry"] if row[0] == "board-a"]) == 3  # pruned to the retention
    assert reference["rejected"] and reference["runtimes"]
