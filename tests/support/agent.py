"""The agent as a real daemon process for tests, and a coordinator connected to the same broker.

    agent = AgentProcess(tmp_path, broker).start()      # python -m agent.cli run --config ...
    AgentProcess(tmp_path, broker, fault="hang")         # every measurement worker hangs (support.faults)
    with coordinator(broker) as fleet: ...               # agent.fleet.client.Coordinator
    agent.kill(); agent.start()                          # a crash and a restart, same state folder
    agent.stop()                                         # SIGTERM, waits for a clean exit

The model store holds a copy of the digits bundle under `models/digits`, so commands name it as
the issue's loop does (`bench models/digits`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from support.broker import Broker
from support.faults import fault_env
from support.process import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
START_TIMEOUT_S = 20.0
# A short measurement: every phase runs, in about a second.
QUICK_BENCH: Dict[str, Any] = {"model": "models/digits", "backend": "tflite", "precision": "fp32",
                               "warmup": 2, "iterations": 20, "min_seconds": 0, "eval_limit": 60}


def toml_value(value: Any) -> str:
    """A Python value as TOML (strings, numbers, booleans, lists of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgentProcess(ServiceProcess):
    """One `edge-agent run` with its own config, state folder and model store in `workdir`."""

    name = "the agent"

    started: List[AgentProcess] = []  # every instance that was started, for `no_stray_agents`

    def __init__(self, workdir: Path, broker: Broker, device_id: str = "dev-a", groups: tuple = ("lab",),
                 settings: Optional[Dict[str, Dict[str, Any]]] = None, env: Optional[Dict[str, str]] = None,
                 fault: Optional[str] = None) -> None:
        self.workdir, self.broker, self.device_id = Path(workdir), broker, device_id
        self.model_dir = self.workdir / "models"
        if not (self.model_dir / "models" / "digits").exists():
            shutil.copytree(DIGITS, self.model_dir / "models" / "digits")
        sections: Dict[str, Dict[str, Any]] = {
            "device": {"id": device_id, "groups": list(groups)},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "tls": False, "reconnect_min_s": 0.1,
                     "reconnect_max_s": 0.5, "keepalive_s": 5},
            "storage": {"state_dir": str(self.workdir / "state"), "model_dir": str(self.model_dir)},
            "telemetry": {"interval_s": 0},
            "jobs": {"stop_grace_s": 5},
        }
        for name, values in (settings or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config = self.workdir / "agent.toml"
        self.write_config(sections)
        self.env = dict(os.environ, **(env or {}), **(fault_env(fault) if fault else {}))
        self.log_path = self.workdir / "agent.log"
        self.process: Optional[subprocess.Popen] = None

    def write_config(self, sections: Dict[str, Dict[str, Any]]) -> None:
        """(Re)write the agent's TOML file."""
        lines: List[str] = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> AgentProcess:
        """Start the daemon (it connects in the background)."""
        AgentProcess.started.append(self)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, number: int) -> None:
        """Send a signal to the daemon."""
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL the daemon and its measurement workers, as a crash or a power cut would."""
        if self.alive():
            assert self.process is not None
            workers = _children(self.process.pid)
            self.process.kill()
            self.process.wait()
            for pid in workers:  # workers run in their own sessions: a power cut would take them too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def rss_kb(self) -> int:
        """The daemon's resident memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture(autouse=True)
def no_stray_agents() -> Iterator[None]:
    """Kill any agent a test left running (a failed assertion before its stop()). Import this
    fixture into a test module that starts agents."""
    yield
    while AgentProcess.started:
        AgentProcess.started.pop().kill()


def _children(pid: int) -> List[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def mqtt_settings(broker: Broker, **overrides: Any) -> Any:
    """Plain-MQTT settings for a client of the test broker."""
    from agent.config import MqttSettings

    return MqttSettings(**dict({"host": "127.0.0.1", "port": broker.port, "tls": False}, **overrides))


def coordinator(broker: Broker, **overrides: Any) -> Any:
    """A connected `agent.fleet.client.Coordinator` (close it, or use it as a context manager)."""
    from agent.fleet.client import Coordinator

    return Coordinator(mqtt_settings(broker, **overrides))


def wait_status(fleet: Any, device_id: str, state: str = "online", after: str = "",
                timeout: float = START_TIMEOUT_S) -> Any:
    """Wait for the device's status `state` stamped later than `after` (an ISO time; a retained
    status of an earlier run does not count) and return it. Other messages read meanwhile are lost."""
    for _, message in fleet.watch(timeout):
        if message.KIND == "status" and message.device == device_id and message.state == state \
                and message.ts > after:
            return message
    raise AssertionError(f"{device_id} never reported {state} within {timeout} s")
