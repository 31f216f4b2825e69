"""The coordinator as a real service process for tests, and a small client of its HTTP API.

    service = CoordinatorProcess(tmp_path, broker, database_url).start()   # edge-agent coordinator --config ...
    service.api.get("/api/v1/boards")                                      # JSON, with the operator token
    service.stop(); service.start()                                        # a restart, same database
    with served_api(make_app(store, api)) as api: ...                       # the API alone, in this process

Two tokens are configured: `READ_TOKEN` (role read) and `OPERATOR_TOKEN` (role operator).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from support.agent import toml_value
from support.broker import Broker, free_port
from support.process import ServiceProcess

from agent.fleet.settings import hash_token

ROOT = Path(__file__).resolve().parents[2]
READ_TOKEN = "read-token-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
START_TIMEOUT_S = 60.0


class Api:
    """JSON over HTTP to a coordinator's API on 127.0.0.1, with a bearer token."""

    def __init__(self, base: str, token: Optional[str] = OPERATOR_TOKEN) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: Any = None, token: Any = "default") -> Tuple[int, Any]:
        """(HTTP status, decoded JSON body) of one request; `token=None` sends none."""
        headers = {"Content-Type": "application/json"}
        chosen = self.token if token == "default" else token
        if chosen is not None:
            headers["Authorization"] = f"Bearer {chosen}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        text = raw.decode("utf-8")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str) -> Any:
        """GET that must succeed: the JSON body."""
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def text(self, path: str) -> str:
        """A plain-text GET (`/metrics`)."""
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return response.read().decode("utf-8")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll `probe` until it returns something true; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(every)


class CoordinatorProcess(ServiceProcess):
    """One `edge-agent coordinator` with its own config in `workdir`, on the test broker and a database."""

    name = "the coordinator"

    started: List[CoordinatorProcess] = []

    def __init__(self, workdir: Path, broker: Broker, database_url: str,
                 settings: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        sections: Dict[str, Dict[str, Any]] = {
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "tls": False, "reconnect_min_s": 0.1,
                     "reconnect_max_s": 0.5, "keepalive_s": 5},
            "database": {"url": database_url},
            "api": {"host": "127.0.0.1", "port": self.port},
            "jobs": {"timeout_s": 120},
        }
        for name, values in (settings or {}).items():
            sections.setdefault(name, {}).update(values)
        lines: List[str] = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        for name, role, token in (("tests-read", "read", READ_TOKEN), ("tests-operator", "operator", OPERATOR_TOKEN)):
            lines += ["[[api.tokens]]", f'name = "{name}"', f'role = "{role}"', f'sha256 = "{hash_token(token)}"']
        self.config = self.workdir / "coordinator.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log_path = self.workdir / "coordinator.log"
        self.process: Optional[subprocess.Popen] = None
        self.api = Api(f"http://127.0.0.1:{self.port}")

    def start(self) -> CoordinatorProcess:
        """Start the service and wait until its API answers."""
        CoordinatorProcess.started.append(self)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "agent.cli", "coordinator", "--config",
                                             str(self.config), "--log-level", "debug"],
                                            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"the coordinator's API on port {self.port}\n{self.log()}", self._answers, START_TIMEOUT_S)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the coordinator exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.api.call("GET", "/api/v1/boards")[0] == 200
        except OSError:
            return False


@contextlib.contextmanager
def served_api(app: Any) -> Iterator[Api]:
    """An ASGI app served by a real uvicorn on a free 127.0.0.1 port in a thread, as an `Api` (operator token)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for("uvicorn started", lambda: server.started, timeout=30, every=0.02)
    try:
        yield Api(f"http://127.0.0.1:{server.config.port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ingested(service: CoordinatorProcess, outcome: str) -> float:
    """The service's `edge_fleet_messages_ingested_total{outcome}` (since it started), from /metrics."""
    for line in service.api.text("/metrics").splitlines():
        if line.startswith("edge_fleet_messages_ingested_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stored_results(store: Any) -> Set[Tuple[str, str]]:
    """Every stored result's (device id, command id), read from the database itself (an open `Store`)."""
    from sqlalchemy import select

    from agent.fleet.store.models import StoredResult

    with store.session() as session:
        return {(row.device_id, row.command_id)
                for row in session.execute(select(StoredResult.device_id, StoredResult.command_id))}


def board_states(service: CoordinatorProcess) -> Dict[str, str]:
    """Each board's state (online, offline) as the coordinator's API has it."""
    return {board["device_id"]: board["state"] for board in service.api.get("/api/v1/boards")["boards"]}


def finished_job(service: CoordinatorProcess, job_id: str) -> Any:
    """The fleet job once it is finished (every board in a final state), else None."""
    job = service.api.get(f"/api/v1/jobs/{job_id}")
    return job if job["finished"] else None
