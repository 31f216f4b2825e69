"""`edge-agent coordinator` end to end, on a real Mosquitto, with real agents (daemons and their workers) and
the service as a real process, on SQLite and on a real PostgreSQL: a bench sent to all is one fleet job whose
board states reach done; its results are stored once each (one is replayed); a slower result raises an alert
on its MQTT topic and a runtime-version change starts a new baseline; a restart mid-job loses nothing; an
offline board gets its job when it returns; malformed and mismatched messages are counted, never a crash."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from support.agent import QUICK_BENCH, AgentProcess, coordinator, no_stray_agents  # noqa: F401
from support.broker import NEEDS_MOSQUITTO, Broker
from support.cli import run_cli
from support.coordinator import OPERATOR_TOKEN, READ_TOKEN, CoordinatorProcess, wait_for
from support.fleet import RealReports, bench_result, variant
from support.postgres import PostgresServer, postgres_bin

from agent.mqtt.messages import utc_now

pytestmark = [NEEDS_MOSQUITTO]
AGENTS = (("board-a", ("lab",), {}), ("board-b", ("lab",), {"jobs": {"time_limit_s": 120}}),
          ("board-c", ("shelf",), {"telemetry": {"interval_s": 1}}))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto on 127.0.0.1."""
    with Broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def service(tmp_path: Path, broker: Broker, store_url: str) -> Iterator[CoordinatorProcess]:
    """The coordinator on the test broker and a fresh database (SQLite or PostgreSQL); a small baseline
    so a few injected results make one."""
    started = CoordinatorProcess(tmp_path / "coordinator", broker, store_url, settings={
        "regressions": {"baseline_results": 3, "min_baseline": 3}}).start()
    yield started
    started.kill()


@pytest.fixture
def agents(tmp_path: Path, broker: Broker, service: CoordinatorProcess) -> List[AgentProcess]:
    """Three agents with different names, groups and settings, online in the coordinator's store."""
    started = [AgentProcess(tmp_path / device, broker, device_id=device, groups=groups, settings=settings).start()
               for device, groups, settings in AGENTS]
    wait_for("three boards online", lambda: _states(service) == {device: "online" for device, _, _ in AGENTS})
    return started


def _states(service: CoordinatorProcess) -> Dict[str, str]:
    return {board["device_id"]: board["state"] for board in service.api.get("/api/v1/boards")["boards"]}


def _job(service: CoordinatorProcess, target: str, cmd: str, args: Dict[str, Any]) -> Dict[str, Any]:
    status, body = service.api.call("POST", "/api/v1/jobs", {"target": target, "cmd": cmd, "args": args})
    assert status in (200, 201, 202), body
    return body


def _finished(service: CoordinatorProcess, job_id: str) -> Any:
    job = service.api.get(f"/api/v1/jobs/{job_id}")
    return job if job["finished"] else None


def _ingested(service: CoordinatorProcess, outcome: str) -> float:
    for line in service.api.text("/metrics").splitlines():
        if line.startswith("edge_fleet_messages_ingested_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _results(service: CoordinatorProcess, job_id: str) -> List[Dict[str, Any]]:
    return [row for row in service.api.get("/api/v1/results?limit=1000")["results"] if row["command_id"] == job_id]


def test_a_bench_to_all_is_one_job_whose_results_land_once(service: CoordinatorProcess, agents: List[AgentProcess],
                                                           broker: Broker) -> None:
    job = _job(service, "all", "bench", QUICK_BENCH)
    assert sorted(board["device_id"] for board in job["boards"]) == ["board-a", "board-b", "board-c"]
    done = wait_for("every board done", lambda: _finished(service, job["id"]), timeout=180)
    assert {board["device_id"]: board["state"] for board in done["boards"]} == \
        {"board-a": "done", "board-b": "done", "board-c": "done"}, done
    assert all(board["result_id"] is not None for board in done["boards"])
    rows = _results(service, job["id"])
    assert sorted(row["device_id"] for row in rows) == ["board-a", "board-b", "board-c"]

    # The outbox is at least once: the same result again is absorbed.
    stored = service.api.get(f"/api/v1/results/board-a/{job['id']}")
    before = _ingested(service, "duplicate")
    with coordinator(broker) as fleet:
        fleet.client.publish("edge/board-a/results", json.dumps(stored["payload"]), qos=1).wait_for_publish(10)
    wait_for("the replay ingested", lambda: _ingested(service, "duplicate") == before + 1)
    assert sorted(row["device_id"] for row in _results(service, job["id"])) == ["board-a", "board-b", "board-c"]

    listed = run_cli("fleet", "results", "--api", service.api.base, "--token", READ_TOKEN, "--json")
    assert listed.code == 0, listed.stderr
    ours = [row for row in json.loads(listed.stdout)["results"] if row["command_id"] == job["id"]]
    assert len(ours) == 3
    table = run_cli("fleet", "jobs", job["id"], "--api", service.api.base, "--token", READ_TOKEN)
    assert table.code == 0, table.stderr
    assert all(device in table.stdout for device in ("board-a", "board-b", "board-c"))
    assert table.stdout.count("done") >= 3

    # `fleet send` straight to a board: a short summary per report, not the raw JSON.
    pairs = [f"{key}={json.dumps(value)}" for key, value in QUICK_BENCH.items()]
    summary = run_cli("fleet", "send", "board-c", "bench", *pairs, "--host", "127.0.0.1", "--port", str(broker.port),
                      "--no-tls", "--timeout", "120")
    assert summary.code == 0, summary.stderr
    line = next(line for line in summary.stdout.splitlines() if "p50" in line)
    assert "tflite/fp32" in line and "p99" in line and "top1" in line and "{" not in summary.stdout, summary.stdout


def test_a_slower_result_raises_an_alert_and_a_new_runtime_starts_a_baseline(
        service: CoordinatorProcess, broker: Broker, agents: List[AgentProcess]) -> None:
    job = _job(service, "board-a", "bench", QUICK_BENCH)
    wait_for("the bench done", lambda: _finished(service, job["id"]), timeout=120)
    real = service.api.get(f"/api/v1/results/board-a/{job['id']}")["payload"]
    with coordinator(broker) as fleet:
        fleet.subscribe("edge/coordinator/alerts")

        def publish(document: Dict[str, Any]) -> None:
            fleet.client.publish("edge/board-a/results", json.dumps(document), qos=1).wait_for_publish(10)

        for factor in (1.0, 1.02, 0.98):  # the baseline: three stable results
            publish(variant(real, factor))
        publish(variant(real, 3.0))  # three times slower
        first = json.loads(wait_for("an alert on MQTT", lambda: _next(fleet.received), timeout=30)[1])
        assert first["schema"] == "edge-agent/alert/1" and first["kind"] == "regression"
        assert first["device_id"] == "board-a" and first["measure"] in ("p50_ms", "p99_ms")
        open_alerts = service.api.get("/api/v1/alerts?state=open")["alerts"]
        assert any(alert["measure"] == "p50_ms" and alert["device_id"] == "board-a" for alert in open_alerts)
        while _next(fleet.received):
            pass
        publish(variant(real, 5.0, runtime_version="99.0.0"))  # a new runtime: a new baseline, not an alert
        notes = wait_for("an expected change", lambda: [alert for alert in service.api.get("/api/v1/alerts")["alerts"]
                                                        if alert["kind"] == "expected_change"], timeout=30)
        assert notes[0]["runtime_version"] == "99.0.0"
    regressions = [alert for alert in service.api.get("/api/v1/alerts")["alerts"] if alert["kind"] == "regression"
                   and alert["runtime_version"] == "99.0.0"]
    assert regressions == []


def _next(received: queue.Queue[Any]) -> Any:
    try:
        return received.get(timeout=0.5)
    except queue.Empty:
        return None


def test_a_restart_mid_job_and_an_offline_board_lose_nothing(service: CoordinatorProcess, broker: Broker,
                                                             agents: List[AgentProcess]) -> None:
    long_bench = dict(QUICK_BENCH, iterations=100000, min_seconds=6)
    job = _job(service, "board-b", "bench", long_bench)
    wait_for("board-b running", lambda: service.api.get(f"/api/v1/jobs/{job['id']}")["boards"][0]["state"]
             in ("accepted", "running"), timeout=60)
    with coordinator(broker) as fleet:
        fleet.follow("board-b")
        assert service.stop() == 0
        # The result comes while the coordinator is down: the broker keeps it in the coordinator's session.
        replies = list(fleet.replies(job["id"], single=True, timeout_s=120))
        assert replies[-1].KIND == "result" and replies[-1].status == "done"
    service.start()
    done = wait_for("the late result lands in its job", lambda: _finished(service, job["id"]), timeout=120)
    assert done["boards"][0]["state"] == "done" and done["boards"][0]["result_id"] is not None

    agents[2].stop()
    wait_for("board-c offline", lambda: _states(service)["board-c"] == "offline")
    waiting = _job(service, "board-c", "ping", {})
    assert waiting["boards"][0]["state"] == "pending"
    agents[2].start()
    back = wait_for("board-c gets its job when it returns", lambda: _finished(service, waiting["id"]), timeout=60)
    assert back["boards"][0]["state"] == "done"


def test_bad_messages_are_counted_and_the_service_lives_on(service: CoordinatorProcess, broker: Broker) -> None:
    with coordinator(broker) as fleet:
        for topic, payload in (("edge/board-x/results", b"{not json"),
                               ("edge/board-x/status", json.dumps({"schema": "edge-agent/status/1", "device": "other",
                                                                   "state": "online", "version": "1",
                                                                   "ts": utc_now()}).encode()),
                               ("edge/board-x/telemetry", b"x" * (5 * 1024 * 1024))):
            fleet.client.publish(topic, payload, qos=1).wait_for_publish(10)
    wait_for("three rejections counted", lambda: _ingested(service, "rejected") == 3, timeout=30)
    metrics = service.api.text("/metrics")
    for code in ("invalid_json", "device_mismatch", "too_large"):
        assert f'code="{code}"' in metrics, code
    assert service.alive()
    status, body = service.api.call("GET", "/api/v1/boards", token=None)
    assert status == 401 and body["error"]["code"]
    status, body = service.api.call("POST", "/api/v1/jobs", {"target": "all", "cmd": "ping", "args": {}},
                                    token=READ_TOKEN)
    assert status == 403, body
    status, body = service.api.call("GET", "/api/v1/jobs/no-such-job", token=OPERATOR_TOKEN)
    assert status == 404 and "no-such-job" in body["error"]["message"]


def test_a_database_outage_loses_no_result(tmp_path: Path, broker: Broker, real: RealReports) -> None:
    """The coordinator's PostgreSQL stops while a board's result arrives: the service stays up, says so once,
    keeps the message unacknowledged, and stores it when the database is back."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    with PostgresServer() as database:
        service = CoordinatorProcess(tmp_path / "coordinator", broker, database.new_database()).start()
        try:
            topic, payload = bench_result("board-a", real.host, "cmd-outage")
            database.pause()
            with coordinator(broker) as fleet:
                fleet.client.publish(topic, payload, qos=1).wait_for_publish(10)
            wait_for("the outage logged", lambda: "the database is unavailable" in service.log(), timeout=30)
            assert service.alive()
            code, body = service.api.call("GET", "/api/v1/boards")
            assert code == 503 and body["error"]["code"] == "database_unavailable", body
            database.resume()
            stored = wait_for("the result stored after the outage", lambda: _stored(service, "cmd-outage"), timeout=60)
            assert stored["device_id"] == "board-a" and "the database is back" in service.log()
            assert service.log().count("the database is unavailable") == 1
        finally:
            service.kill()


def _stored(service: CoordinatorProcess, command_id: str) -> Any:
    try:
        return next((row for row in service.api.get("/api/v1/results")["results"]
                     if row["command_id"] == command_id), None)
    except AssertionError:
        return None  # the API answers 503 while the database is down
