"""agent/fleet/ingest.py on both databases, fed real messages (support/fleet.py): results stored once,
presence from status and last will, bounded telemetry, and every bad message recorded, never raised."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import pytest
from sqlalchemy import func, select
from support.fleet import ORIN, RealReports, at, bench_result, status, telemetry, ts, wire

from agent.fleet.ingest import IngestSettings, Outcome, Retention, ingest
from agent.fleet.queries import rejected_counts
from agent.fleet.store.database import Store
from agent.fleet.store.models import Board, Measurement, RejectedMessage, StoredResult, TelemetrySample
from agent.mqtt.protocol import Event, Result
from agent.service.readings import Readings


def _count(store: Store, model: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _board(store: Store, device: str) -> Board:
    with store.session() as session:
        board = session.get(Board, device)
        assert board is not None
        session.refresh(board, ["runtimes"])
        return board


def test_a_replayed_result_is_stored_once(store: Store, real: RealReports) -> None:
    topic, payload = bench_result("host-1", real.host, "cmd-1")
    assert ingest(store, topic, payload, received_at=at(1)) == Outcome("stored", "result", "host-1")
    assert ingest(store, topic, payload, received_at=at(2)) == Outcome("duplicate", "result", "host-1")
    assert _count(store, StoredResult) == 1 and _count(store, Measurement) == len(real.host)
    with store.session() as session:
        stored = session.scalars(select(StoredResult)).one()
        assert stored.payload == payload.decode() and stored.received_at == at(1)
        assert stored.document()["report"]["reports"] == real.host
    other_board = bench_result("host-2", real.host, "cmd-1")  # the same command id from another board
    assert ingest(store, *other_board).outcome == "stored"


def test_a_device_id_that_differs_from_the_topics_is_rejected_and_counted(store: Store, real: RealReports) -> None:
    _, payload = bench_result("orin-1", real.orin[0], "cmd-1")
    outcome = ingest(store, "edge/host-1/results", payload, received_at=at(5))
    assert (outcome.outcome, outcome.code) == ("rejected", "device_mismatch")
    assert "'orin-1' is not the topic's 'host-1'" in str(outcome.reason)
    assert _count(store, StoredResult) == 0 and _count(store, Board) == 0
    assert rejected_counts(store) == {"device_mismatch": 1}
    with store.session() as session:
        row = session.scalars(select(RejectedMessage)).one()
        assert (row.topic, row.size, row.received_at) == ("edge/host-1/results", len(payload), at(5))


def _hostile_report(real: RealReports) -> List[Dict[str, Any]]:
    report = json.loads(json.dumps(real.orin[0][0]))
    report["model"]["name"] = "evil\u0000name"
    report["backend"]["configuration"]["threads"] = 10**30
    report["latency"]["p50_ms"] = "NaN"
    report["backend"]["name"] = "b" * 5000
    return [report, "not a report"]  # type: ignore[list-item]


BAD = [  # (topic, payload, code)
    ("edge/host-1/results", b"{not json", "invalid_json"),
    ("edge/host-1/results", b"\xff\xfe", "invalid_json"),
    ("edge/host-1/results", b'{"schema":"edge-agent/result/1","schema":"x"}', "invalid_json"),
    ("edge/host-1/results", b"[1, 2]", "not_an_object"),
    ("edge/host-1/results", b'{"schema":"edge-agent/nothing/1"}', "bad_value"),
    ("edge/host-1/results", b'{"schema":"edge-agent/result/1","device":"host-1"}', "bad_value"),
    ("edge/host-1/status", b'{"schema":"edge-agent/result/1","device":"host-1","command_id":"c","cmd":"ping",'
                           b'"status":"done","ts":"2026-12-01T12:00:00.000Z"}', "wrong_topic"),
    ("edge/host-1/cmd", b"{}", "bad_topic"),
    ("elsewhere/host-1/status", b"{}", "bad_topic"),
    ("edge/bad id/status", b"{}", "bad_value"),
    ("edge/host-1/results", b'{"schema":"edge-agent/result/1","device":"host-1","command_id":"../x","cmd":"ping",'
                            b'"status":"done","ts":"2026-12-01T12:00:00.000Z"}', "bad_value"),
    ("edge/host-1/status", b'{"schema":"edge-agent/status/1","device":"host-1","state":"online","version":"1",'
                           b'"ts":"yesterday"}', "bad_value"),
    ("edge/host-1/status", b'{"schema":"edge-agent/status/1","device":"host-1","state":"online","version":"1",'
                           b'"groups":["a/b"],"ts":"2026-12-01T12:00:00.000Z"}', "bad_value"),
]


def test_malformed_and_oversized_payloads_are_rejected_with_a_reason(store: Store) -> None:
    settings = IngestSettings(max_payload_bytes=1000)
    for topic, payload, code in BAD:
        outcome = ingest(store, topic, payload, settings)
        assert (outcome.outcome, outcome.code) == ("rejected", code), (topic, payload, outcome)
        assert outcome.reason and "\n" not in outcome.reason
    huge = ingest(store, "edge/host-1/telemetry", b" " * 1001, settings)
    assert (huge.code, huge.reason) == ("too_large", "payload of 1001 bytes exceeds the 1000-byte limit")
    assert sum(rejected_counts(store).values()) == len(BAD) + 1 and _count(store, Board) == 0


def test_hostile_values_in_a_well_formed_result_are_stored_as_nothing(store: Store, real: RealReports) -> None:
    topic, payload = bench_result("orin-1", _hostile_report(real), "cmd-1")
    assert ingest(store, topic, payload).outcome == "stored"
    with store.session() as session:
        measured = session.scalars(select(Measurement)).one()
        assert (measured.model_name, measured.threads, measured.p50_ms, measured.backend) == (None, 2, None, None)


def test_online_then_the_last_will_leaves_the_board_offline_with_its_last_seen(store: Store) -> None:
    assert ingest(store, *status("orin-1", "online", groups=["lab", "orin"]), received_at=at(10)).outcome == "stored"
    board = _board(store, "orin-1")
    assert (board.state, board.last_seen, board.groups, board.platform) == ("online", at(10), ["lab", "orin"],
                                                                             "orin-1 board")
    ingest(store, *telemetry("orin-1", Readings(str(ORIN)).read()), received_at=at(20))
    assert ingest(store, *status("orin-1", "offline"), received_at=at(90)).outcome == "stored"  # the will
    board = _board(store, "orin-1")
    assert (board.state, board.state_since, board.last_seen) == ("offline", at(90), at(20))


def test_an_event_counts_as_the_board_being_heard_from(store: Store) -> None:
    event = wire(Event("orin-1", "c1", "accepted", "bench", ts=ts(0)))
    assert ingest(store, *event, received_at=at(30)) == Outcome("seen", "event", "orin-1")
    assert _board(store, "orin-1").last_seen == at(30) and _board(store, "orin-1").state is None


@pytest.mark.parametrize("retention, kept", [(Retention(max_age_s=None, max_count=3), [7, 8, 9]),
                                             (Retention(max_age_s=2.5, max_count=None), [7, 8, 9]),
                                             (Retention(max_age_s=None, max_count=None), list(range(10)))])
def test_telemetry_is_kept_within_its_retention(store: Store, retention: Retention, kept: List[int]) -> None:
    readings = Readings(str(ORIN)).read()
    settings = IngestSettings(retention=retention)
    for second in range(10):
        for device in ("orin-1", "orin-2"):
            assert ingest(store, *telemetry(device, readings, second), settings, at(second)).outcome == "stored"
    with store.session() as session:
        for device in ("orin-1", "orin-2"):
            samples = session.scalars(select(TelemetrySample).where(TelemetrySample.device_id == device)
                                      .order_by(TelemetrySample.received_at)).all()
            assert [s.received_at for s in samples] == [at(second) for second in kept]
            assert samples[-1].document()["readings"] == readings


def test_info_describes_the_board_and_an_older_one_does_not_overwrite_it(store: Store, real: RealReports) -> None:
    topic, payload = wire(Result("host-1", "info-2", "info", "done", real.host_info, ts=ts(100)))
    ingest(store, topic, payload)
    board = _board(store, "host-1")
    device = real.host_info["device"]
    assert (board.kind, board.cpu_model, board.cpu_cores, board.os) == (
        device["kind"], device["cpu"]["model"], device["cpu"]["cores"], device["os"])
    names = {runtime.name: runtime.version for runtime in board.runtimes}
    assert names == {r["name"]: r["version"] for r in real.host_info["runtimes"]}
    older = dict(real.host_info, device=dict(device, os="Older OS"), runtimes=[])
    ingest(store, *wire(Result("host-1", "info-1", "info", "done", older, ts=ts(50))))
    board = _board(store, "host-1")
    assert board.os == device["os"] and len(board.runtimes) == len(names) and board.hardware_at == at(100)
    newer = dict(real.host_info, runtimes=real.host_info["runtimes"][:1])
    ingest(store, *wire(Result("host-1", "info-3", "info", "done", newer, ts=ts(200))))
    assert [runtime.name for runtime in _board(store, "host-1").runtimes] == [real.host_info["runtimes"][0]["name"]]


def test_a_bench_result_describes_its_board(store: Store, real: RealReports) -> None:
    ingest(store, *bench_result("orin-1", real.orin[0], "cmd-1"))
    board = _board(store, "orin-1")
    assert (board.board_model, board.jetpack, board.l4t) == (real.orin[0][0]["device"]["model"], "6.2", "36.4.3")


def test_concurrent_deliveries_of_one_result_store_it_once(store: Store, real: RealReports) -> None:
    # Coordinators (or threads) may receive the same result, from a board not seen before, at once.
    topic, payload = bench_result("host-1", real.host, "cmd-1")
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: ingest(store, topic, payload).outcome, range(16)))
    assert sorted(outcomes) == ["duplicate"] * 15 + ["stored"]
    assert _count(store, StoredResult) == 1 and _count(store, Measurement) == len(real.host)
