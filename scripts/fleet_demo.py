"""The fleet on one machine (scripts/fleet-demo installs, then runs this): a local Mosquitto, three agents with
different names and settings, and the coordinator; a bench sent to all of them as one fleet job; the results,
the cross-board comparison, and where to look. It stays up until Ctrl-C (`--exit`: stop once shown).

    .venv/bin/python scripts/fleet_demo.py [--dir .fleet-demo] [--exit]

Everything is on 127.0.0.1: the broker on 1883 and the API on 8470 when they are free (then `edge-agent
fleet ...` needs no options: the coordinator runs with the local profile, whose operator token the CLI reads
from ~/.local/state/edge-agent-coordinator), else on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from agent.fleet.http import local_token_file

ROOT = Path(__file__).resolve().parents[1]
EDGE_AGENT = [sys.executable, "-m", "agent.cli"]
# Three boards, each its own name, group and settings.
BOARDS = (("demo-orin", "lab", {"telemetry": {"interval_s": 2}}),
          ("demo-pi5", "lab", {"telemetry": {"interval_s": 5}, "jobs": {"time_limit_s": 120}}),
          ("demo-x86", "desk", {"telemetry": {"interval_s": 0}}))
BENCH = {"model": "digits", "backend": "tflite", "precision": "fp32", "iterations": 200, "min_seconds": 0,
         "eval_limit": 100}


def port(preferred: int) -> int:
    """`preferred` when nothing listens on it, else a free port."""
    for candidate in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise SystemExit("no free TCP port on 127.0.0.1")


def write_toml(path: Path, sections: Dict[str, Dict[str, Any]]) -> Path:
    """A settings file of flat sections (strings, numbers, lists)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Demo:
    """The processes of the demo and the API they are driven through."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: List[Tuple[str, subprocess.Popen]] = []
        self.broker_port, self.api_port = port(1883), port(8470)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.token = ""

    def spawn(self, name: str, command: List[str]) -> None:
        """Start one process, its output in `<folder>/<name>.log`."""
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((name, process))

    def check_alive(self) -> None:
        """Stop with the log of any process that died."""
        for name, process in self.processes:
            if process.poll() is not None:
                log = (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with {process.returncode}:\n{log}")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API request with the local operator token; the JSON answer."""
        request = urllib.request.Request(self.api + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait(self, what: str, probe: Any, timeout: float) -> Any:
        """Poll `probe` until it answers something true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                value = probe()
            except (OSError, urllib.error.URLError, ValueError):
                value = None
            if value:
                return value
            time.sleep(0.3)
        raise SystemExit(f"fleet-demo: {what} did not happen within {timeout:g} s (logs in {self.folder})")

    def start(self) -> None:
        """The broker, the coordinator, then the three agents."""
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(mosquitto, os.X_OK):
            raise SystemExit("fleet-demo needs Mosquitto: apt-get install mosquitto (scripts/fleet-demo does it)")
        config = self.folder / "mosquitto.conf"
        config.write_text(f"listener {self.broker_port} 127.0.0.1\nallow_anonymous true\n"
                          + ("user root\n" if os.geteuid() == 0 else ""))
        self.spawn("mosquitto", [mosquitto, "-c", str(config)])
        mqtt = {"host": "127.0.0.1", "port": self.broker_port, "tls": False}
        coordinator = write_toml(self.folder / "coordinator.toml", {
            "mqtt": mqtt, "database": {"url": str(self.folder / "coordinator.db")},
            "api": {"port": self.api_port}, "jobs": {"timeout_s": 300}})
        self.spawn("coordinator", [*EDGE_AGENT, "coordinator", "--local", "--config", str(coordinator)])
        token_file = local_token_file()  # the local profile's: `edge-agent fleet` reads it with no options
        self.wait("the coordinator's API", lambda: token_file.is_file() and self._api_up(token_file), 60)
        for device, group, settings in BOARDS:
            agent = write_toml(self.folder / f"{device}.toml", dict(
                {"device": {"id": device, "groups": [group]}, "mqtt": mqtt,
                 "storage": {"state_dir": str(self.folder / device)}}, **settings))
            self.spawn(device, [*EDGE_AGENT, "run", "--local", "--config", str(agent)])

    def _api_up(self, token_file: Path) -> bool:
        self.token = token_file.read_text().strip()
        return bool(self.call("GET", "/api/v1/boards") is not None)

    def run(self) -> str:
        """Wait for the boards, send the bench to all, wait for every board's result; the job id."""
        names = sorted(device for device, _, _ in BOARDS)
        self.wait("three boards online", lambda: sorted(
            board["device_id"] for board in self.call("GET", "/api/v1/boards")["boards"]
            if board["state"] == "online") == names, 90)
        job = self.call("POST", "/api/v1/jobs", {"target": "all", "cmd": "bench", "args": BENCH})
        print(f"fleet job {job['id']}: bench {BENCH['model']} sent to {', '.join(names)}", flush=True)
        done = self.wait("every board's result", lambda: self._finished(job["id"]), 240)
        print("states: " + ", ".join(f"{board['device_id']} {board['state']}" for board in done["boards"]))
        return str(job["id"])

    def _finished(self, job_id: str) -> Optional[Dict[str, Any]]:
        job = self.call("GET", f"/api/v1/jobs/{job_id}")
        return job if job["finished"] else None

    def show(self, job_id: str) -> None:
        """The results and the cross-board table, as `edge-agent fleet` prints them; then where to look."""
        fleet = [*EDGE_AGENT, "fleet"]
        api = ["--api", self.api, "--token", self.token]
        results = subprocess.run([*fleet, "results", *api], cwd=ROOT, env=self.env, text=True, capture_output=True)
        print(results.stdout or results.stderr)
        result = self.call("GET", f"/api/v1/results/demo-orin/{job_id}")
        sha256 = result["payload"]["report"]["reports"][0]["model"]["sha256"]
        compare = subprocess.run([*fleet, "compare-boards", sha256, *api], cwd=ROOT, env=self.env, text=True,
                                 capture_output=True)
        print(compare.stdout or compare.stderr)
        same = self.api_port == 8470
        options = "" if same else f" --api {self.api}"
        print(f"""where to look:
  dashboard  {self.api}/ (log in with the token below; docs/dashboard.md)
  API        {self.api}/docs (OpenAPI: {self.api}/openapi.json)
  token      {local_token_file()} (the local profile's operator token; `edge-agent fleet` reads it)
  metrics    {self.api}/metrics
  CLI        .venv/bin/edge-agent fleet boards{options}
             ... fleet results | compare-boards {sha256[:12]}... | alerts | jobs {job_id}
  broker     127.0.0.1:{self.broker_port} (mosquitto_sub -p {self.broker_port} -t 'edge/#' -v)
  logs       {self.folder}/*.log; database {self.folder}/coordinator.db""", flush=True)

    def stop(self) -> None:
        """SIGTERM everything, agents first, the broker last."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> int:
    """Run the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / ".fleet-demo"), help="where configs, state and logs go")
    parser.add_argument("--exit", action="store_true", help="stop everything once the results are shown")
    args = parser.parse_args()
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    demo = Demo(folder)
    try:
        demo.start()
        demo.show(demo.run())
        if not args.exit:
            print("running; Ctrl-C stops the broker, the agents and the coordinator", flush=True)
            while True:
                demo.check_alive()
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
