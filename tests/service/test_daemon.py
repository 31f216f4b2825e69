"""The agent as a service, end to end: a real `edge-agent run` process, a real Mosquitto on 127.0.0.1,
and the coordinator (`edge-agent fleet` and agent.fleet) on the other side."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from support.agent import (
    QUICK_BENCH,
    AgentProcess,
    coordinator,
    no_stray_agents,  # noqa: F401 (an autouse fixture)
    wait_status,
)
from support.broker import NEEDS_MOSQUITTO, Broker
from support.cli import QUICK, run_cli
from support.listener import LoopbackListener

from agent.errors import FleetError
from agent.fleet.client import Coordinator
from agent.mqtt.protocol import Command, Event, Result, decode_message, encode_command

pytestmark = [
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
]
pytest.importorskip("paho.mqtt")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("daemon-broker")) as running:
        yield running


@pytest.fixture()
def fleet(broker: Broker) -> Iterator[Coordinator]:
    with coordinator(broker) as connected:
        yield connected


def new_agent(tmp_path: Path, broker: Broker, **kwargs: Any) -> AgentProcess:
    return AgentProcess(tmp_path, broker, device_id=f"dev-{uuid.uuid4().hex[:8]}", **kwargs)


@pytest.fixture()
def agent(tmp_path: Path, broker: Broker, fleet: Coordinator) -> Iterator[AgentProcess]:
    started = new_agent(tmp_path, broker).start()
    wait_status(fleet, started.device_id)
    yield started
    started.stop()


def ask(fleet: Coordinator, target: str, cmd: str, args: Optional[Dict[str, Any]] = None,
        timeout: float = 60.0, command_id: Optional[str] = None) -> List[Any]:
    """Send a command and return every reply up to the final one(s)."""
    fleet.follow(target)
    command = fleet.send(target, cmd, args, command_id)
    single = not (target == "all" or target.startswith("group:"))
    return list(fleet.replies(command.id, single, timeout, settle_s=1.0))


def result_of(replies: List[Any]) -> Result:
    results = [message for message in replies if isinstance(message, Result)]
    assert len(results) == 1, replies
    return results[0]


def events_of(replies: List[Any]) -> List[str]:
    return [message.event for message in replies if isinstance(message, Event)]


def test_fleet_send_bench_runs_a_real_measurement(agent: AgentProcess, broker: Broker) -> None:
    """The issue's loop: `fleet send <id> bench models/digits` -> accepted -> progress -> a result whose
    numbers are those of a real run (accuracy equals the CLI's on the same files)."""
    sent = run_cli("fleet", "send", agent.device_id, "bench", "model=models/digits", "backend=tflite",
                   "precision=fp32", "warmup=2", "iterations=30", "min_seconds=0", "--json",
                   "--host", "127.0.0.1", "--port", str(broker.port), "--no-tls", "--timeout", "120")
    assert sent.code == 0, sent.stderr
    messages = [json.loads(line) for line in sent.stdout.splitlines()]
    events = [m["event"] for m in messages if m["schema"] == "edge-agent/event/1"]
    assert events[:2] == ["accepted", "started"] and "progress" in events and events[-1] == "done", events
    assert messages[-1]["schema"] == "edge-agent/result/1" and messages[-1]["status"] == "done"
    report = messages[-1]["report"]["reports"][0]
    assert report["status"] == "ok" and report["backend"]["name"] == "tflite"
    assert report["latency"]["iterations"] >= 30 and 0 < report["latency"]["p50_ms"] < 1000
    local = run_cli("bench", str(agent.model_dir / "models" / "digits"), "--backend", "tflite",
                    "--precision", "fp32", *QUICK, "--json")
    assert local.code == 0, local.stderr
    assert report["accuracy"] == local.json()[0]["accuracy"] and report["accuracy"]["top1"] > 0.9
    assert report["model"]["sha256"] == local.json()[0]["model"]["sha256"]


def test_cheap_commands_answer_with_their_reports(agent: AgentProcess, fleet: Coordinator) -> None:
    pong = ask(fleet, agent.device_id, "ping")
    assert events_of(pong) == ["accepted", "started", "done"] and result_of(pong).report["pong"] is True
    models = result_of(ask(fleet, agent.device_id, "models")).report["models"]
    assert [entry["name"] for entry in models] == ["models/digits"]
    assert {m["precision"] for m in models[0]["models"]} == {"fp32", "int8"}
    info = result_of(ask(fleet, agent.device_id, "info", timeout=120)).report
    assert {runtime["name"] for runtime in info["runtimes"]} >= {"onnxruntime", "tflite"}


def raw_replies(fleet: Coordinator, device: str, count: int, timeout: float = 10.0) -> List[Any]:
    """The next `count` messages on the device's events and results topics, in arrival order."""
    got: List[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        topic, payload, _ = fleet.received.get(timeout=max(0.01, deadline - time.monotonic()))
        if topic.startswith(f"edge/{device}/"):
            got.append(decode_message(payload))
    return got


@pytest.mark.parametrize("payload,code,command_id", [
    (b"{not json", "invalid_json", None),
    (b'{"cmd": "ping"}', "missing_field", None),
    (b'{"id": "r-1", "cmd": "reboot"}', "unknown_command", "r-1"),
    (b'{"id": "r-2", "cmd": "bench", "args": {"model": "../../etc/passwd"}}', "bad_model_name", "r-2"),
    (b'{"id": "r-3", "cmd": "bench", "args": {"model": "digits", "threads": "2"}}', "wrong_type", "r-3"),
    (b'{"id": "r-4", "cmd": "cancel", "args": {"target": "nothing-like-it"}}', "unknown_target", "r-4"),
])
def test_bad_commands_are_rejected_with_a_code(agent: AgentProcess, fleet: Coordinator, payload: bytes, code: str,
                                               command_id: Optional[str]) -> None:
    fleet.follow(agent.device_id)
    fleet.publish(agent.device_id, Command(command_id or "x", "ping"), payload)
    [rejection] = raw_replies(fleet, agent.device_id, 1)
    assert (rejection.event, rejection.code, rejection.command_id) == ("rejected", code, command_id)
    assert rejection.message


def test_a_command_id_seen_before_is_answered_from_the_store_never_run_twice(
        agent: AgentProcess, fleet: Coordinator) -> None:
    first = ask(fleet, agent.device_id, "bench", QUICK_BENCH, command_id="same-1")
    again = ask(fleet, agent.device_id, "bench", QUICK_BENCH, command_id="same-1")
    assert events_of(first)[:2] == ["accepted", "started"] and result_of(first).status == "done"
    assert events_of(again) == ["done"] and again[0].detail == {"duplicate": True}
    assert result_of(again) == result_of(first)  # the stored result, same timestamp: not a second run
    rejected = ask(fleet, agent.device_id, "bench", {"model": "../x"}, command_id="same-2")
    repeated = ask(fleet, agent.device_id, "ping", command_id="same-2")  # a fixed payload, the same id
    assert rejected[0].code == repeated[0].code == "bad_model_name" and repeated[0].detail == {"duplicate": True}


def test_mqtt5_response_topic_and_correlation_data_are_honoured(agent: AgentProcess, fleet: Coordinator) -> None:
    reply_topic = f"edge/{agent.device_id}/reply/session-1"
    fleet.subscribe(reply_topic)
    command = Command("rt-1", "ping", response_topic=reply_topic, correlation_data=b"\x00corr\xff")
    fleet.publish(agent.device_id, command, encode_command(command))
    copies = []
    while len(copies) < 4:
        topic, payload, correlation = fleet.received.get(timeout=10)
        if topic == reply_topic:
            copies.append((decode_message(payload), correlation))
    assert [getattr(m, "event", "result") for m, _ in copies] == ["accepted", "started", "done", "result"]
    assert {correlation for _, correlation in copies} == {b"\x00corr\xff"}


def test_group_and_broadcast_commands_reach_the_device(agent: AgentProcess, fleet: Coordinator) -> None:
    for target in ("group:lab", "all"):
        replies = ask(fleet, target, "ping", timeout=20)
        assert {message.device for message in replies} == {agent.device_id}
        assert result_of(replies).status == "done"
    with pytest.raises(FleetError, match="no final answer"):
        ask(fleet, "group:elsewhere", "ping", timeout=1.5)


def _wait_event(fleet: Coordinator, command_id: str, wanted: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        _, payload, _ = fleet.received.get(timeout=max(0.01, deadline - time.monotonic()))
        message = decode_message(payload)
        if getattr(message, "command_id", None) == command_id and (
                getattr(message, "event", None) == wanted or (wanted == "result" and isinstance(message, Result))):
            return message


def test_cancel_stops_a_running_job_within_a_second(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, fault="hang").start()
    wait_status(fleet, agent.device_id)
    fleet.follow(agent.device_id)
    hung = fleet.send(agent.device_id, "bench", QUICK_BENCH)
    _wait_event(fleet, hung.id, "started")
    cancel_within_a_second(fleet, agent, hung.id)
    agent.stop()


def test_a_sigkilled_agent_leaves_no_job_process_or_worker_behind(tmp_path: Path, broker: Broker,
                                                                 fleet: Coordinator) -> None:
    """The agent dies mid-job outside systemd (no cgroup to clean up): its job process and that job's worker
    follow it within a second, whichever notices first (the kernel's parent-death signal, which
    tests/measure/test_isolate.py checks alone, or the job process's broken pipe to the dead daemon)."""
    agent = new_agent(tmp_path, broker, fault="hang").start()
    wait_status(fleet, agent.device_id)
    fleet.follow(agent.device_id)
    hung = fleet.send(agent.device_id, "bench", QUICK_BENCH)
    _wait_event(fleet, hung.id, "started")
    deadline = time.monotonic() + 30
    while not _worker_pids(agent):
        assert time.monotonic() < deadline, "no measurement worker is running"
        time.sleep(0.02)
    left = _descendants(agent.pid)
    assert len(left) >= 2  # the job process and its worker
    agent.signal(signal.SIGKILL)  # the daemon alone (AgentProcess.kill would also kill what it started)
    assert agent.process is not None
    agent.process.wait()
    deadline = time.monotonic() + 1.0
    while any(_running(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in left if _running(pid)], "a job process or worker outlived the agent"


def _descendants(pid: int) -> List[int]:
    found, pending = [], [pid]
    while pending:
        for task in _tasks(pending.pop()):
            with contextlib.suppress(OSError):
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                pending += children
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def cancel_within_a_second(fleet: Coordinator, agent: AgentProcess, command_id: str) -> None:
    """Wait until the job's worker runs (the job process starts first), cancel the job, and check that it
    ends `cancelled` and its worker is gone within a second."""
    deadline = time.monotonic() + 30
    while not _worker_pids(agent):
        assert time.monotonic() < deadline, "no measurement worker is running"
        time.sleep(0.02)
    started = time.monotonic()
    fleet.send(agent.device_id, "cancel", {"target": command_id})
    result = _wait_event(fleet, command_id, "result")
    assert result.status == "cancelled" and result.code == "cancelled"
    while _worker_pids(agent) and time.monotonic() - started < 1.0:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 and not _worker_pids(agent), f"worker still there after {elapsed:.2f} s"


def _worker_pids(agent: AgentProcess) -> List[int]:
    """The agent's measurement workers now (its job process's children; processes may end while they are
    listed)."""
    workers = []
    for pid in _descendants(agent.pid):
        with contextlib.suppress(OSError):
            if b"agent.measure.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers


def _tasks(pid: int) -> List[Path]:
    with contextlib.suppress(OSError):
        return list(Path(f"/proc/{pid}/task").iterdir())
    return []


def test_sigterm_requeues_the_running_job_and_goes_offline(tmp_path: Path, broker: Broker,
                                                           fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, settings={"jobs": {"stop_grace_s": 0.5}}).start()
    online = wait_status(fleet, agent.device_id)
    fleet.follow(agent.device_id)
    long = fleet.send(agent.device_id, "bench", dict(QUICK_BENCH, min_seconds=4))
    _wait_event(fleet, long.id, "started")
    time.sleep(1.5)
    assert agent.stop(timeout=15) == 0
    assert wait_status(fleet, agent.device_id, "offline", after=online.ts).state == "offline"
    assert "goes back to the queue" in agent.log()
    agent.start()  # the job runs again from the start and finishes
    result = _wait_event(fleet, long.id, "result", timeout=60)
    assert result.status == "done" and result.report["reports"][0]["latency"]["iterations"] >= 20
    agent.stop()


def test_sighup_reloads_the_configuration(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker).start()
    wait_status(fleet, agent.device_id)
    fleet.subscribe(f"edge/{agent.device_id}/telemetry")
    text = agent.config.read_text().replace("interval_s = 0", "interval_s = 0.3")
    agent.config.write_text(text)
    agent.signal(signal.SIGHUP)
    _, payload, _ = fleet.received.get(timeout=10)
    while decode_message(payload).KIND != "telemetry":
        _, payload, _ = fleet.received.get(timeout=10)
    telemetry = decode_message(payload)
    assert telemetry.device == agent.device_id and telemetry.readings["memory_mb"]["total"] > 0
    agent.config.write_text(text.replace("[jobs]", "[jobs]\nno_such_key = 1"))
    agent.signal(signal.SIGHUP)
    time.sleep(1.0)
    assert agent.alive() and "configuration not reloaded" in agent.log() and "no_such_key" in agent.log()
    agent.stop()


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    folder = tempfile.mkdtemp(prefix="notify-", dir="/tmp")  # AF_UNIX paths are short
    address = os.path.join(folder, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        agent = new_agent(tmp_path, broker, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"}).start()
        datagrams = []
        while not any("READY=1" in d for d in datagrams) or sum("WATCHDOG=1" in d for d in datagrams) < 3:
            datagrams.append(sock.recv(4096).decode())
        ready = next(d for d in datagrams if "READY=1" in d)
        assert "STATUS=connected" in ready
        agent.signal(signal.SIGTERM)
        while "STOPPING=1" not in datagrams[-1]:
            datagrams.append(sock.recv(4096).decode())
        assert agent.stop() == 0
    os.unlink(address)
    os.rmdir(folder)


def test_mqtt_311_works_without_reply_properties(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, settings={"mqtt": {"protocol": "3.1.1"}}).start()
    wait_status(fleet, agent.device_id)
    assert result_of(ask(fleet, agent.device_id, "ping")).status == "done"
    assert "(MQTT 3.1.1)" in agent.log()
    agent.stop()


def test_a_worker_out_of_memory_fails_the_job_clearly(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, settings={"jobs": {"memory_limit_mb": 2048}}, fault="oom").start()
    wait_status(fleet, agent.device_id)
    result = result_of(ask(fleet, agent.device_id, "bench", QUICK_BENCH))
    assert (result.status, result.code) == ("failed", "memory_limit")
    assert "out of memory (limit 2048 MB)" in result.message
    assert result_of(ask(fleet, agent.device_id, "ping")).status == "done"  # and the agent carries on
    agent.stop()


def test_an_oversized_batch_fails_memory_limit_and_the_agent_carries_on(agent: AgentProcess, fleet: Coordinator,
                                                                        mobilenet: Path) -> None:
    """MobileNetV2 at batch 256 under a 1,500 MB limit that the command sets (it may lower the agent's own
    limit, never raise it): ONNX Runtime's arena refuses the allocation, the job fails `memory_limit`
    naming the limit and the size asked for, and the next command is answered."""
    shutil.copytree(mobilenet, agent.model_dir / "models" / "mobilenet_v2")
    result = result_of(ask(fleet, agent.device_id, "bench", {
        "model": "models/mobilenet_v2", "backend": "onnxruntime", "batch": [256], "iterations": 2,
        "min_seconds": 0, "warmup": 1, "memory_limit_mb": 1500}, timeout=120))
    assert (result.status, result.code) == ("failed", "memory_limit"), result
    assert "out of memory (limit 1500 MB)" in result.message and "size" in result.message
    assert result_of(ask(fleet, agent.device_id, "ping")).status == "done"


@pytest.mark.skipif(importlib.util.find_spec("agent.commands.profile") is None, reason="no profile command")
def test_profile_runs_as_a_job_and_returns_the_cli_reports(agent: AgentProcess, fleet: Coordinator) -> None:
    replies = ask(fleet, agent.device_id, "profile", {"model": "models/digits", "backend": "tflite",
                                                      "precision": "fp32", "iterations": 10}, timeout=240)
    result = result_of(replies)
    assert result.status == "done", result
    assert events_of(replies)[:3] == ["accepted", "started", "progress"]
    [report] = result.report["reports"]
    assert report["kind"] == "profile" and report["status"] == "ok" and report["profile"]


def test_select_runs_as_a_job_and_returns_the_selection_report(tmp_path: Path, broker: Broker,
                                                                fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, env={"EDGE_AGENT_CACHE_DIR": str(tmp_path / "cache")}).start()
    wait_status(fleet, agent.device_id)
    replies = ask(fleet, agent.device_id, "select", {"model": "models/digits", "time_limit": 15}, timeout=240)
    result = result_of(replies)
    assert result.status == "done", result
    assert "progress" in events_of(replies)
    selection = result.report["selection"]
    assert result.report["schema"] == "edge-agent/selection/1" and selection["choice"]["backend"] in (
        "onnxruntime", "tflite")
    assert {c["status"] for c in selection["candidates"]} >= {"chosen"}
    agent.stop()


def test_cancel_stops_a_running_select_within_a_second(tmp_path: Path, broker: Broker, fleet: Coordinator) -> None:
    agent = new_agent(tmp_path, broker, env={"EDGE_AGENT_CACHE_DIR": str(tmp_path / "cache")}).start()
    wait_status(fleet, agent.device_id)
    fleet.follow(agent.device_id)
    select = fleet.send(agent.device_id, "select", {"model": "models/digits", "time_limit": 120})
    _wait_event(fleet, select.id, "progress", timeout=60)
    cancel_within_a_second(fleet, agent, select.id)
    assert result_of(ask(fleet, agent.device_id, "ping")).status == "done"
    agent.stop()


def test_the_daemon_never_imports_numpy_or_a_runtime(agent: AgentProcess, fleet: Coordinator) -> None:
    """Jobs run in the job process and measurements in its workers: after an `info`, a benchmark on each
    runtime and a profile, neither numpy nor a runtime's library is mapped into the daemon itself."""
    assert {r["name"] for r in result_of(ask(fleet, agent.device_id, "info")).report["runtimes"]
            if r["available"]} >= {"onnxruntime", "tflite"}
    for backend in ("onnxruntime", "tflite"):
        result = result_of(ask(fleet, agent.device_id, "bench", dict(QUICK_BENCH, backend=backend)))
        assert result.status == "done" and result.report["reports"][0]["backend"]["name"] == backend
    profiled = result_of(ask(fleet, agent.device_id, "profile", {"model": "models/digits", "backend": "onnxruntime",
                                                                 "iterations": 5}))
    assert profiled.status == "done" and profiled.report["reports"][0]["profile"]["layers"]
    maps = Path(f"/proc/{agent.pid}/maps").read_text()
    assert "_sqlite3" in maps  # the maps are the daemon's (its store), read after its jobs
    for library in ("numpy", "onnxruntime", "litert", "tflite_runtime", "onnx_cpp2py"):
        assert library not in maps, f"{library} is loaded into the daemon"


class Mqtt311OnlyBroker(LoopbackListener):
    """A stand-in for a broker that speaks only MQTT 3.1.1 (Mosquitto 2 speaks both, so none exists
    here): it answers an MQTT 5 CONNECT with the 3.1.1 refusal "unacceptable protocol version" and
    passes other connections through to the real broker."""

    def __init__(self, broker: Broker) -> None:
        self.upstream = broker.port
        self.refused = 0
        super().__init__()

    def handle(self, peer: socket.socket) -> None:
        """Each client in its own thread."""
        threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while len(head) < 12:  # fixed header, remaining length, "\0\4MQTT", protocol level
            chunk = client.recv(4096)
            if not chunk:
                return client.close()
            head += chunk
        start = 1
        while head[start] & 0x80:
            start += 1
        if head[start + 7] == 5:
            self.refused += 1
            client.sendall(b"\x20\x02\x00\x01")
            return client.close()
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        upstream.sendall(head)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            for chunk in iter(lambda: source.recv(65536), b""):
                target.sendall(chunk)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

def test_the_agent_falls_back_to_mqtt_311_when_the_broker_refuses_5(tmp_path: Path, broker: Broker,
                                                                    fleet: Coordinator) -> None:
    old = Mqtt311OnlyBroker(broker)
    agent = new_agent(tmp_path, broker, settings={"mqtt": {"port": old.port}}).start()
    wait_status(fleet, agent.device_id)
    assert result_of(ask(fleet, agent.device_id, "ping")).status == "done"
    assert old.refused >= 1 and "falling back to MQTT 3.1.1" in agent.log() and "(MQTT 3.1.1)" in agent.log()
    agent.stop()
    old.close()
