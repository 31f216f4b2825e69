"""Fill a coordinator's store with a large made-up fleet, fast: the rows ingest would write for N boards (presence,
hardware, runtimes, telemetry) and R bench results, built around real reports of this machine (one
`edge-agent bench` and one `edge-agent profile` of models/digits), varied per board model, configuration and time.

Used by scripts/bench_dashboard.py (the page times at 1,000 boards and 100,000 results) and
scripts/dashboard_screenshots.py. The rows go in with batched inserts, not through MQTT and ingest (which
tests/fleet covers): this fills a database in seconds rather than hours. scripts/simulate_fleet.py is the
fleet that speaks the protocol.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from sqlalchemy import insert

from agent.fleet.api import make_app
from agent.fleet.dashboard.pages import add_dashboard
from agent.fleet.reports import measurements
from agent.fleet.sessions import COOKIE, Sessions
from agent.fleet.settings import ApiSettings, ApiToken, hash_token
from agent.fleet.store import latest
from agent.fleet.store.database import Store
from agent.fleet.store.models import Board, BoardRuntime, Measurement, StoredResult, TelemetrySample

ROOT = Path(__file__).resolve().parents[1]
# (board model, JetPack, CPU, cores, latency factor against this machine, hottest zone at rest)
BOARD_MODELS = (
    ("NVIDIA Jetson Orin Nano Developer Kit", "6.2", "ARMv8 Processor rev 1 (v8l)", 6, 2.2, 48.0),
    ("NVIDIA Jetson Xavier NX Developer Kit", "5.1.2", "ARMv8 Processor rev 0 (v8l)", 6, 3.5, 52.0),
    ("Raspberry Pi 5 Model B Rev 1.0", None, "Cortex-A76", 4, 4.0, 55.0),
    ("Raspberry Pi 4 Model B Rev 1.4", None, "Cortex-A72", 4, 9.0, 60.0),
    ("AMD EPYC 7B13", None, "AMD EPYC 7B13", 2, 1.0, 40.0),
)
GROUPS = ("lab", "line-1", "line-2", "shelf")


def run_json(*args: str, python: str = sys.executable) -> Any:
    """What `edge-agent ARGS --json` prints, run on this machine (SystemExit with its error when it fails)."""
    done = subprocess.run([python, "-m", "agent.cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"edge-agent {args[0]} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def real_reports(python: str = sys.executable) -> Dict[str, Any]:
    """One bench (ONNX Runtime and TFLite, FP32) and one profile of models/digits, run on this machine."""
    def run(*args: str) -> List[Dict[str, Any]]:
        return list(run_json(*args, python=python))
    bench = run("bench", "models/digits", "--backend", "onnxruntime,tflite", "--precision", "fp32,int8",
                "--iterations", "200", "--min-seconds", "0", "--rounds", "1", "--eval-limit", "50")
    profile = run("profile", "models/digits", "--backend", "onnxruntime", "--precision", "fp32", "--iterations", "50")
    return {"bench": [report for report in bench if report.get("status") == "ok"], "profile": profile[0]}


def fill(store: Store, reports: Dict[str, Any], boards: int, results: int, telemetry: int = 30, seed: int = 7,
         profiles_every: int = 50) -> List[str]:
    """Write `boards` boards (with `telemetry` samples each) and `results` results spread over them; the device ids."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    devices = [f"board-{index:04d}" for index in range(boards)]
    kinds = {device: BOARD_MODELS[index % len(BOARD_MODELS)] for index, device in enumerate(devices)}
    with store.session() as session:
        session.execute(insert(Board), [_board(device, kinds[device], index, now, rng)
                                        for index, device in enumerate(devices)])
        session.execute(insert(BoardRuntime), [row for device in devices for row in _runtimes(device, reports)])
        session.execute(insert(TelemetrySample), [
            _telemetry(device, kinds[device], now - timedelta(seconds=10 * (telemetry - step)), rng)
            for device in devices for step in range(telemetry)])
    batch: List[Dict[str, Any]] = []
    for index in range(results):
        device = devices[index % boards]
        moment = now - timedelta(seconds=(results - index) * 30 * 86400 / max(results, 1))
        profile = profiles_every and index % profiles_every == 0
        batch.append(_result(device, kinds[device], moment, reports, rng, profile))
        if len(batch) == 2000 or index == results - 1:
            _write(store, batch)
            batch = []
    return devices


def _board(device: str, kind: Sequence[Any], index: int, now: datetime, rng: random.Random) -> Dict[str, Any]:
    model, jetpack, cpu, cores, _, _ = kind
    online = rng.random() < 0.92
    return {"device_id": device, "state": "online" if online else "offline", "state_since": now - timedelta(hours=2),
            "last_seen": now - timedelta(seconds=rng.uniform(1, 30) if online else rng.uniform(3600, 86400)),
            "agent_version": "0.1.0", "groups": [GROUPS[index % len(GROUPS)]], "platform": model, "hardware_at": now,
            "kind": "jetson" if jetpack else "generic", "board_model": model, "jetpack": jetpack,
            "l4t": "36.4.3" if jetpack == "6.2" else ("35.4.1" if jetpack else None), "cpu_model": cpu,
            "cpu_arch": "x86_64" if "EPYC" in cpu else "aarch64", "cpu_cores": cores, "memory_total_mib": 8192}


def _runtimes(device: str, reports: Dict[str, Any]) -> List[Dict[str, Any]]:
    versions = {report["backend"]["name"]: report["backend"].get("version") for report in reports["bench"]}
    return [{"device_id": device, "name": name, "available": True, "version": version, "reason": None}
            for name, version in sorted(versions.items())]


def _telemetry(device: str, kind: Sequence[Any], moment: datetime, rng: random.Random) -> Dict[str, Any]:
    hottest = kind[5] + rng.uniform(-2, 12)
    readings = {"load": [rng.uniform(0, 2)] * 3, "memory_mb": {"total": 8192.0, "available": rng.uniform(3000, 7000)},
                "temperature_c": {"cpu-thermal": hottest, "gpu-thermal": hottest - 3}, "max_temperature_c": hottest,
                "cpu_mhz": {"mean": rng.uniform(1200, 1800), "max": 1800.0}, "throttled": hottest > 68,
                "throttle_reasons": []}
    payload = {"schema": "edge-agent/telemetry/1", "device": device, "readings": readings,
               "ts": moment.isoformat().replace("+00:00", "Z")}
    return {"device_id": device, "ts": moment, "received_at": moment, "job": None, "payload": json.dumps(payload)}


def _result(device: str, kind: Sequence[Any], moment: datetime, reports: Dict[str, Any], rng: random.Random,
            profile: bool) -> Dict[str, Any]:
    """A bench (or, now and then, a profile) result of this board at `moment`, its figures scaled to the board."""
    chosen = [reports["profile"]] if profile else rng.sample(reports["bench"], k=min(2, len(reports["bench"])))
    varied = []
    factor = kind[4] * (1.6 if rng.random() < 0.01 else 1.0)  # now and then a slow outlier
    for template in chosen:
        report = copy.deepcopy(template)
        report["device"] = dict(report.get("device") or {}, model=kind[0])
        latency = report.get("latency") or {}
        for key, value in list(latency.items()):
            if key.endswith("_ms") and isinstance(value, (int, float)):
                latency[key] = value * factor * rng.uniform(0.95, 1.08)
        varied.append(report)
    command_id = uuid.uuid4().hex
    cmd = "profile" if profile else "bench"
    payload = {"schema": "edge-agent/result/1", "device": device, "command_id": command_id, "cmd": cmd,
               "status": "done", "report": {"reports": varied}, "ts": moment.isoformat().replace("+00:00", "Z")}
    return {"device_id": device, "command_id": command_id, "cmd": cmd, "status": "done", "code": None, "ts": moment,
            "received_at": moment, "payload": json.dumps(payload), "measured": measurements({"reports": varied})}


def _write(store: Store, batch: List[Dict[str, Any]]) -> None:
    """Insert results with their measurements, and keep the latest of each configuration as ingest does."""
    with store.session() as session:
        rows = []
        for item in batch:
            row = StoredResult(**{key: value for key, value in item.items() if key != "measured"})
            row.measurements = [Measurement(device_id=row.device_id, ts=row.ts, **asdict(measured))
                                for measured in item["measured"]]
            rows.append(row)
        session.add_all(rows)
        session.flush()
        latest.record(session, [measurement for row in rows for measurement in row.measurements])


@contextlib.contextmanager
def serve_dashboard(store: Store, token: str = "made-up-fleet-operator") -> Iterator[Tuple[str, str]]:
    """The API and the dashboard over `store` on a free 127.0.0.1 port (a real uvicorn on a thread): its base
    URL and the Cookie header of a logged-in operator session (`token` also logs in through the form)."""
    import uvicorn

    tokens = (ApiToken("made-up", "operator", hash_token(token)),)
    sessions = Sessions(tokens, b"made-up-fleet-session-key-0123456789", 3600)
    app = make_app(store, ApiSettings(tokens=tokens), sessions=sessions)
    add_dashboard(app, store, sessions)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", f"{COOKIE}={sessions.open(token)}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
