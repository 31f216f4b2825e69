#!/usr/bin/env python3
"""Screenshots of every dashboard page from a running fleet, for docs/screenshots/ (docs/dashboard.md).

Starts, all on 127.0.0.1, a Mosquitto, the coordinator and three real agents; sends a bench of models/digits to
every board, a profile and a select to one; publishes a few copies of a real result (a stable baseline, then
one 3x slower) so there is an alert; then a headless Chromium logs in and saves each page at 1280 px, and the
overview and a model page at a tablet's 820 px. This machine has no thermal zones or clocks to show, so two more
pages come from a made-up fleet of 200 boards (scripts/fleet_fill.py; `made-up-*.png`): the overview with its
temperature sparklines and a board's telemetry charts.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import fleet_fill  # noqa: E402
from support.agent import QUICK_BENCH, AgentProcess, coordinator  # noqa: E402
from support.broker import Broker  # noqa: E402
from support.browser import chromium  # noqa: E402
from support.coordinator import OPERATOR_TOKEN, CoordinatorProcess, wait_for  # noqa: E402
from support.fleet import variant  # noqa: E402

from agent.fleet.store.database import open_store  # noqa: E402

AGENTS = (("orin-lab-1", ("lab",)), ("pi5-line-1", ("line-1",)), ("x86-desk", ("desk",)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-shots-") as folder, Broker(Path(folder) / "broker") as broker:
        work = Path(folder)
        service = CoordinatorProcess(work / "coordinator", broker, str(work / "coordinator.db"), settings={
            "regressions": {"baseline_results": 3, "min_baseline": 3}}).start()
        agents = [AgentProcess(work / device, broker, device_id=device, groups=groups,
                               settings={"telemetry": {"interval_s": 1}}).start() for device, groups in AGENTS]
        try:
            wait_for("three boards online", lambda: len([board for board in service.api.get("/api/v1/boards")["boards"]
                                                         if board["state"] == "online"]) == 3)
            _run(service, "all", "info", {})
            bench = _run(service, "all", "bench", dict(QUICK_BENCH, backend=["onnxruntime", "tflite"],
                                                        precision=["fp32", "int8"]))
            profile = _run(service, "x86-desk", "profile", {"model": "models/digits", "backend": "onnxruntime",
                                                            "precision": "fp32", "iterations": 50})
            _run(service, "x86-desk", "select", {"model": "models/digits", "time_limit": 120})
            real = service.api.get(f"/api/v1/results/orin-lab-1/{bench}")["payload"]
            with coordinator(broker) as fleet:
                for factor in (1.0, 1.02, 0.98, 3.0):
                    fleet.client.publish("edge/orin-lab-1/results", json.dumps(variant(real, factor)),
                                         qos=1).wait_for_publish(10)
            wait_for("an alert", lambda: service.api.get("/api/v1/alerts?state=open")["alerts"], timeout=30)
            time.sleep(3)  # a few more telemetry samples for the charts
            _shoot(service, args.out, bench, profile)
        finally:
            for agent in agents:
                agent.stop()
            service.stop()
        _shoot_made_up(work, args.out)
    print(f"screenshots in {args.out}")
    return 0


def _run(service: CoordinatorProcess, target: str, cmd: str, command_args: Dict[str, Any]) -> str:
    """Send a fleet job and wait until every board of it is final; its id."""
    status, job = service.api.call("POST", "/api/v1/jobs", {"target": target, "cmd": cmd, "args": command_args})
    if status != 202:
        raise SystemExit(f"{cmd} to {target}: {status} {job}")
    wait_for(f"{cmd} done", lambda: service.api.get(f"/api/v1/jobs/{job['id']}")["finished"], timeout=600)
    return str(job["id"])


def _shoot(service: CoordinatorProcess, out: Path, bench: str, profile: str) -> None:
    base = service.api.base
    sha = service.api.get(f"/api/v1/results/orin-lab-1/{bench}")["measurements"][0]["model_sha256"]
    rows = service.api.get(f"/api/v1/compare?model={sha}")["rows"]
    pages: List[Any] = [("overview", "/", 1280), ("board", "/boards/x86-desk", 1280), ("models", "/models", 1280),
                        ("model", f"/models/{sha}", 1280),
                        ("compare", f"/compare?a={rows[0]['measurement_id']}&b={rows[-1]['measurement_id']}", 1280),
                        ("profile", f"/results/x86-desk/{profile}", 1280), ("alerts", "/alerts?state=all", 1280),
                        ("jobs", "/jobs", 1280), ("job", f"/jobs/{bench}", 1280),
                        ("overview-tablet", "/", 820), ("model-tablet", f"/models/{sha}", 820)]
    for width in sorted({width for _, _, width in pages}):
        with chromium(width=width, height=1100) as driver:
            driver.get(base + "/login")
            driver.find_element("id", "token").send_keys(OPERATOR_TOKEN)
            driver.find_element("id", "login").click()
            wait_for("logged in", lambda: driver.find_elements("id", "count-total"), timeout=15)
            for name, path, shot_width in pages:
                if shot_width != width:
                    continue
                driver.get(base + path)
                time.sleep(0.5)
                driver.save_screenshot(str(out / f"{name}.png"))
                print(f"{name}: {path}")


def _shoot_made_up(work: Path, out: Path) -> None:
    """The overview and a board page of a made-up fleet of 200 boards with temperatures and clocks."""
    store = open_store(str(work / "made-up.db"))
    devices = fleet_fill.fill(store, fleet_fill.real_reports(), boards=200, results=3000)
    with fleet_fill.serve_dashboard(store, "made-up-token") as (base, _), chromium(width=1280, height=1100) as driver:
        driver.get(base + "/login")
        driver.find_element("id", "token").send_keys("made-up-token")
        driver.find_element("id", "login").click()
        wait_for("logged in", lambda: driver.find_elements("id", "count-total"), timeout=15)
        for name, path in (("made-up-overview", "/"), ("made-up-board", f"/boards/{devices[3]}")):
            driver.get(base + path)
            time.sleep(0.5)
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"{name}: {path}")
    store.close()


if __name__ == "__main__":
    sys.exit(main())
