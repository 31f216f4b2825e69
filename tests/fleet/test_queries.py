"""agent/fleet/queries.py on both databases: the cross-board table of one model from real results of
two board models, the latest result winning, failed reports left out, and the spread of one board model."""

from __future__ import annotations

import json
import statistics

from support.fleet import RealReports, bench_result

from agent.fleet.ingest import ingest
from agent.fleet.queries import compare_boards, spread
from agent.fleet.store.database import Store


def _fill(store: Store, real: RealReports) -> None:
    """host-1 (this machine), orin-1 and orin-2 (the captured Orin Nano) bench models/digits."""
    ingest(store, *bench_result("host-1", real.host, "c-host", seconds=10))
    for number, reports in enumerate(real.orin, 1):
        ingest(store, *bench_result(f"orin-{number}", reports, f"c-orin-{number}", seconds=10 + number))


def test_one_row_per_board_and_configuration_across_board_models(store: Store, real: RealReports) -> None:
    _fill(store, real)
    tflite = next(r for r in real.host if r["backend"]["name"] == "tflite" and r["model"]["precision"] == "fp32")
    sha = tflite["model"]["sha256"]
    assert sha == real.orin[0][0]["model"]["sha256"]  # the same file on both board models
    rows = compare_boards(store, sha)
    orin_model = real.orin[0][0]["device"]["model"]
    host_model = tflite["device"]["model"] or tflite["device"]["cpu"]["model"]
    assert orin_model != host_model
    assert sorted((row.board_model, row.device_id) for row in rows) == sorted(
        [(host_model, "host-1"), (orin_model, "orin-1"), (orin_model, "orin-2")])
    host = next(row for row in rows if row.device_id == "host-1")
    assert (host.backend, host.precision, host.runtime_version) == ("tflite", "fp32", tflite["backend"]["version"])
    assert (host.p50_ms, host.p99_ms, host.throughput_per_s) == (
        tflite["latency"]["p50_ms"], tflite["latency"]["p99_ms"], tflite["latency"]["throughput_per_s"])
    assert (host.peak_rss_mb, host.top1, host.top1_agreement, host.stability) == (
        tflite["memory"]["peak_rss_mb"], tflite["accuracy"]["top1"], tflite["fidelity"]["top1_agreement"],
        tflite["latency"]["stability"]["verdict"])
    assert compare_boards(store, "0" * 64) == []


def test_the_latest_result_wins_and_failed_reports_are_left_out(store: Store, real: RealReports) -> None:
    _fill(store, real)
    sha = real.orin[0][0]["model"]["sha256"]
    faster = json.loads(json.dumps(real.orin[0]))
    faster[0]["latency"]["p50_ms"] = 0.001
    ingest(store, *bench_result("orin-1", faster, "c-later", seconds=100))
    ingest(store, *bench_result("orin-1", real.orin[0], "c-earlier", seconds=5))
    failed = json.loads(json.dumps(real.orin[0]))
    failed[0].update(status="failed", error={"type": "WorkerCrashedError", "message": "SIGSEGV"})
    ingest(store, *bench_result("orin-2", failed, "c-failed", seconds=200))
    rows = {row.device_id: row for row in compare_boards(store, sha)}
    assert rows["orin-1"].p50_ms == 0.001
    assert rows["orin-2"].p50_ms == real.orin[1][0]["latency"]["p50_ms"]


def test_the_spread_across_boards_of_one_board_model(store: Store, real: RealReports) -> None:
    _fill(store, real)
    spreads = {s.board_model: s for s in spread(compare_boards(store, real.orin[0][0]["model"]["sha256"]))}
    orin = spreads[real.orin[0][0]["device"]["model"]]
    p50s = [reports[0]["latency"]["p50_ms"] for reports in real.orin]
    assert (orin.boards, orin.p50_min_ms, orin.p50_median_ms, orin.p50_max_ms) == (
        2, min(p50s), statistics.median(p50s), max(p50s))
    threads = real.orin[0][0]["backend"]["configuration"]["threads"]
    assert (orin.backend, orin.precision, orin.threads) == ("tflite", "fp32", threads)
    assert sum(s.boards for s in spreads.values()) == 3


def test_of_two_results_made_at_the_same_moment_the_one_stored_last_is_the_latest(store: Store,
                                                                                  real: RealReports) -> None:
    sha = real.orin[0][0]["model"]["sha256"]
    first, second = (json.loads(json.dumps(real.orin[0])) for _ in range(2))
    first[0]["latency"]["p50_ms"], second[0]["latency"]["p50_ms"] = 1.0, 2.0
    ingest(store, *bench_result("orin-1", first, "c-first", seconds=50))
    ingest(store, *bench_result("orin-1", second, "c-second", seconds=50))
    assert [row.p50_ms for row in compare_boards(store, sha) if row.device_id == "orin-1"] == [2.0]
