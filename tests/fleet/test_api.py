"""agent/fleet/api.py served by a real uvicorn on 127.0.0.1, over a real store on both databases filled by
ingest with real reports: what each endpoint answers, the OpenAPI description, bearer tokens and roles
(401/403), 404s that name the id, JSON errors with a code and one line, jobs made through `dispatch`, and the
`edge-agent fleet` tables and --json on top of it."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from support.cli import run_cli
from support.coordinator import OPERATOR_TOKEN, READ_TOKEN, Api, served_api
from support.fleet import RealReports, at, bench_result, status, wire

from agent.fleet import jobs
from agent.fleet.api import make_app
from agent.fleet.ingest import ingest
from agent.fleet.jobs import JobView
from agent.fleet.settings import ApiSettings, ApiToken, JobSettings, hash_token
from agent.fleet.store.database import Store
from agent.mqtt.protocol import Result

TOKENS = (ApiToken("viewer", "read", hash_token(READ_TOKEN)), ApiToken("ops", "operator", hash_token(OPERATOR_TOKEN)))


@pytest.fixture
def fleet(store: Store, real: RealReports) -> Store:
    """Two boards, a bench result each, an info result, one rejected message."""
    ingest(store, *status("board-a", "online", groups=["lab"]), received_at=at(0))
    ingest(store, *status("board-b", "offline", groups=["lab"]), received_at=at(0))
    ingest(store, *bench_result("board-a", real.host, "cmd-a", seconds=1), received_at=at(1))
    ingest(store, *bench_result("board-b", real.orin[0], "cmd-b", seconds=2), received_at=at(2))
    ingest(store, *wire(Result("board-a", "cmd-info", "info", "done", real.host_info)), received_at=at(3))
    ingest(store, "edge/board-a/results", b"{broken", received_at=at(4))
    return store


@pytest.fixture
def sent(fleet: Store) -> List[Tuple[str, str, Dict[str, Any], str]]:
    """What `dispatch` was asked to send."""
    return []


@pytest.fixture
def api(fleet: Store, sent: List[Tuple[str, str, Dict[str, Any], str]]) -> Iterator[Api]:
    def dispatch(target: str, cmd: str, args: Dict[str, Any], by: str) -> JobView:
        sent.append((target, cmd, args, by))
        return jobs.create_job(fleet, target, cmd, args, JobSettings(), "edge", at(10), by)[0]

    with served_api(make_app(fleet, ApiSettings(tokens=TOKENS), dispatch)) as served:
        yield served


def test_boards_and_one_board(api: Api, real: RealReports) -> None:
    boards = {board["device_id"]: board for board in api.get("/api/v1/boards")["boards"]}
    assert {name: board["state"] for name, board in boards.items()} == {"board-a": "online", "board-b": "offline"}
    assert boards["board-b"]["hardware"]["board_model"].startswith("NVIDIA Jetson Orin Nano")
    assert boards["board-b"]["hardware"]["jetpack"]
    runtimes = {runtime["name"]: runtime for runtime in boards["board-a"]["runtimes"]}
    assert runtimes["onnxruntime"]["available"] and runtimes["onnxruntime"]["version"]
    one = api.get("/api/v1/boards/board-a?telemetry=5")
    assert one["device_id"] == "board-a" and one["telemetry"] == [] and one["groups"] == ["lab"]


def test_results_filters_and_one_result(api: Api, real: RealReports) -> None:
    listed = api.get("/api/v1/results")["results"]
    assert [row["command_id"] for row in listed] == ["cmd-info", "cmd-b", "cmd-a"]  # newest first
    bench = api.get("/api/v1/results?cmd=bench&device=board-a")["results"]
    assert [row["command_id"] for row in bench] == ["cmd-a"]
    assert len(bench[0]["measurements"]) == len(real.host)
    assert all(measured["p50_ms"] > 0 for measured in bench[0]["measurements"] if measured["status"] == "ok")
    sha256 = real.orin[0][0]["model"]["sha256"]
    assert {row["command_id"] for row in api.get(f"/api/v1/results?model={sha256}")["results"]} == {"cmd-a", "cmd-b"}
    one = api.get("/api/v1/results/board-b/cmd-b")
    assert one["payload"]["report"]["reports"] == real.orin[0] and one["status"] == "done"


def test_compare_boards(api: Api, real: RealReports) -> None:
    sha256 = real.orin[0][0]["model"]["sha256"]
    answer = api.get(f"/api/v1/compare?model={sha256}")
    devices = {row["device_id"] for row in answer["rows"]}
    assert devices == {"board-a", "board-b"}
    assert all(row["p50_ms"] > 0 for row in answer["rows"])
    assert any(str(spread["board_model"]).startswith("NVIDIA Jetson Orin Nano") for spread in answer["spread"])


@pytest.mark.parametrize("path, named", [("/api/v1/boards/board-z", "board-z"), ("/api/v1/jobs/job-z", "job-z"),
                                         ("/api/v1/results/board-a/cmd-z", "cmd-z"),
                                         ("/api/v1/compare?model=" + "0" * 64, "0" * 64),
                                         ("/api/v1/nowhere", "/api/v1/nowhere")])
def test_an_unknown_id_is_a_404_naming_it(api: Api, path: str, named: str) -> None:
    code, body = api.call("GET", path)
    assert code == 404 and named in body["error"]["message"] and body["error"]["code"], body
    assert "\n" not in body["error"]["message"]


def test_tokens_and_roles(api: Api, sent: List[Any]) -> None:
    for token in (None, "wrong-token"):
        code, body = api.call("GET", "/api/v1/boards", token=token)
        assert code == 401 and body["error"]["code"] == "unauthorized", body
    assert api.call("GET", "/api/v1/boards", token=READ_TOKEN)[0] == 200
    code, body = api.call("POST", "/api/v1/jobs", {"target": "all", "cmd": "ping"}, token=READ_TOKEN)
    assert code == 403 and "read-only" in body["error"]["message"], body
    code, body = api.call("POST", "/api/v1/alerts/1/ack", token=READ_TOKEN)
    assert code == 403, body
    assert sent == []


def test_jobs_through_the_api(api: Api, sent: List[Any]) -> None:
    code, job = api.call("POST", "/api/v1/jobs", {"target": "group:lab", "cmd": "ping"})
    assert code == 202, job
    assert sent == [("group:lab", "ping", {}, "ops")] and job["created_by"] == "ops"
    assert {board["device_id"]: board["state"] for board in job["boards"]} == {"board-a": "sent", "board-b": "pending"}
    assert api.get(f"/api/v1/jobs/{job['id']}")["id"] == job["id"]
    assert [item["id"] for item in api.get("/api/v1/jobs")["jobs"]] == [job["id"]]
    code, body = api.call("POST", "/api/v1/jobs", {"target": "board-z", "cmd": "ping"})
    assert code == 404 and body["error"]["code"] == "unknown_board", body
    code, body = api.call("POST", "/api/v1/jobs", {"target": "all", "cmd": "reboot"})
    assert code == 422 and body["error"]["code"] == "unknown_command", body
    code, body = api.call("POST", "/api/v1/jobs", {"cmd": "ping"})
    assert code == 422 and "target" in body["error"]["message"], body


def test_the_openapi_description_lists_every_path(api: Api) -> None:
    description = api.get("/openapi.json")
    assert {"/api/v1/boards", "/api/v1/boards/{device_id}", "/api/v1/results",
            "/api/v1/results/{device_id}/{command_id}", "/api/v1/compare", "/api/v1/alerts",
            "/api/v1/alerts/{alert_id}/ack", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/metrics"} \
        <= set(description["paths"])


def test_metrics_count_the_fleet(api: Api) -> None:
    text = api.text("/metrics")
    assert 'edge_fleet_boards{state="online"} 1.0' in text and 'edge_fleet_boards{state="offline"} 1.0' in text
    assert 'edge_fleet_rejected_messages{code="invalid_json"} 1.0' in text
    assert 'edge_fleet_latency_p50_ms{' in text and 'device="board-b"' in text


def test_the_fleet_cli_prints_tables_and_json(api: Api) -> None:
    options = ["--api", api.base, "--token", READ_TOKEN]
    boards = run_cli("fleet", "boards", *options)
    assert boards.code == 0, boards.stderr
    lines = boards.stdout.splitlines()
    assert lines[0].split()[:2] == ["device", "state"] and "board-a" in lines[1] and "offline" in lines[2]
    results = run_cli("fleet", "results", "--device", "board-b", "--json", *options)
    assert [row["command_id"] for row in json.loads(results.stdout)["results"]] == ["cmd-b"]
    refused = run_cli("fleet", "jobs", "job-z", *options)
    assert refused.code != 0 and refused.stderr.count("\n") == 1 and "job-z" in refused.stderr, refused.stderr
    anonymous = run_cli("fleet", "boards", "--api", api.base, "--token-file", "/nonexistent/token")
    assert anonymous.code != 0 and "/nonexistent/token" in anonymous.stderr
