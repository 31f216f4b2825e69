"""Messages as a board publishes them, for the coordinator's tests: the agent's own message classes
(agent.mqtt.messages) through its one encoder, on the topics `Topics` names."""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from agent import __version__
from agent.mqtt.messages import utc_now
from agent.mqtt.protocol import Message, Result, Status, Telemetry, Topics, encode

EPOCH = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ORIN = Path(__file__).resolve().parents[1] / "fixtures" / "boards" / "jetson-orin-nano"
Document = Dict[str, Any]


@dataclass(frozen=True)
class RealReports:
    """Reports of real bench runs, and a real info report (tests/fleet/conftest.py `real` makes them)."""

    host: List[Document]  # `edge-agent bench models/digits --json` on this machine
    orin: List[List[Document]]  # two in-process runs whose device section is the captured Orin Nano's
    host_info: Document  # `edge-agent info --json`


def at(seconds: float) -> datetime:
    """A fixed test time: `seconds` after EPOCH."""
    return EPOCH + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    """`at(seconds)` as a message's `ts`."""
    return at(seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire(message: Message) -> Tuple[str, bytes]:
    """The topic and payload a board publishes `message` with."""
    return Topics(message.device).topic(message.KIND), encode(message)


def bench_result(device: str, reports: List[Dict[str, Any]], command_id: str, seconds: float = 0.0,
                 cmd: str = "bench") -> Tuple[str, bytes]:
    """A done measurement result carrying `reports`."""
    return wire(Result(device, command_id, cmd, "done", {"reports": reports}, ts=ts(seconds)))


def status(device: str, state: str, seconds: float = 0.0, groups: Optional[List[str]] = None) -> Tuple[str, bytes]:
    """A retained status: the `online` birth, or the `offline` of a clean stop or the last will."""
    platform = {"summary": f"{device} board", "machine": "aarch64", "python": "3.10.12"}
    return wire(Status(device, state, __version__, groups or ["lab"], platform, ts=ts(seconds)))


def telemetry(device: str, readings: Dict[str, Any], seconds: float = 0.0) -> Tuple[str, bytes]:
    """A telemetry message with `readings`."""
    return wire(Telemetry(device, readings, ts=ts(seconds)))


def variant(result: Dict[str, Any], factor: float, runtime_version: Any = None) -> Dict[str, Any]:
    """A copy of a real bench result under a new command id, every latency statistic of every report scaled by
    `factor` (the timed loop's, not the load or first call) and marked stable (and its runtime version changed)."""
    document = copy.deepcopy(result)
    document["id"] = document["command_id"] = uuid.uuid4().hex
    document["ts"] = utc_now()
    for report in document["report"]["reports"]:
        latency = report["latency"]
        for key in list(latency):
            if key.endswith("_ms") and key not in ("load_ms", "first_ms") and isinstance(latency[key], (int, float)):
                latency[key] *= factor
        latency.setdefault("stability", {})["verdict"] = "stable"
        if runtime_version is not None:
            report["backend"]["version"] = runtime_version
    return document


def publish_results(client: Any, devices: List[str], reports: List[Dict[str, Any]], count: int,
                    every_s: float = 0.0) -> Set[Tuple[str, str]]:
    """`count` done bench results carrying `reports`, from `devices` in turn, published QoS 1 through a connected
    `agent.fleet.client.Coordinator` and each acknowledged by the broker; their (device id, command id)."""
    sent = set()
    for index in range(count):
        device, command_id = devices[index % len(devices)], uuid.uuid4().hex
        topic, payload = bench_result(device, reports, command_id, seconds=index)
        client.client.publish(topic, payload, qos=1).wait_for_publish(10)
        sent.add((device, command_id))
        time.sleep(every_s)
    return sent
