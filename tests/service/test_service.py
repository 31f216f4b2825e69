"""The daemon's parts in process, on a real SQLite store: intake, lanes, telemetry readings, backoff."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from agent.mqtt.link import Backoff
from agent.mqtt.protocol import Command, Limits, Topics, encode_command
from agent.service.intake import Intake
from agent.service.lanes import JOBS, QUICK, JobContext, Lane
from agent.service.readings import Readings
from agent.service.replies import Outcome, Replies
from agent.service.store import Store

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"


class Service:
    """An intake and two lanes on one store, like the daemon's, with handlers written here."""

    def __init__(self, folder: Path, queue_limit: int = 5) -> None:
        self.store = Store(folder / "agent.db")
        self.replies = Replies(Topics("dev-t", ("lab",)))
        self.release = threading.Event()
        self.ran: List[str] = []
        handlers = {"ping": self.ping, "bench": self.bench, "eval": self.bench}
        self.quick = Lane("quick", QUICK, self.store, self.replies, {"ping": handlers["ping"]}, lambda: None,
                          lambda: None)
        self.jobs = Lane("jobs", JOBS, self.store, self.replies, {"bench": self.bench, "eval": self.bench},
                         lambda: None, lambda: None)
        self.intake = Intake(self.store, self.replies, (self.quick, self.jobs), lambda: Limits(),
                             lambda: queue_limit, lambda: None)

    def ping(self, command: Command, context: JobContext) -> Outcome:
        self.ran.append(command.id)
        return Outcome("done", {"pong": True})

    def bench(self, command: Command, context: JobContext) -> Outcome:
        self.ran.append(command.id)
        while not self.release.wait(0.02):
            context.check_cancelled()
        context.progress(0.5, {"phase": "measure"})
        return Outcome("done", {"ok": True})

    def take(self, cmd: str, command_id: str, **args: Any) -> str:
        return self.intake.take(encode_command(Command(command_id, cmd, args)))

    def messages(self) -> List[Dict[str, Any]]:
        return [json.loads(entry.message.payload) for entry in self.store.outbox_pending(limit=10_000)]

    def events(self, command_id: str) -> List[str]:
        return [m.get("event", "result") for m in self.messages() if m.get("command_id") == command_id]

    def wait_state(self, job_id: str, state: str) -> None:
        deadline = time.monotonic() + 10
        while self.store.job(job_id).state != state:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"{job_id} never became {state}"
            time.sleep(0.01)


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path)
    yield running
    running.release.set()
    for lane in (running.quick, running.jobs):
        if lane._thread.is_alive():
            lane.stop(5)
    running.store.close()


def test_accepted_commands_queue_and_cheap_ones_pass_a_running_benchmark(service: Service) -> None:
    service.jobs.start()
    service.quick.start()
    assert service.take("bench", "b1", model="digits") == "accepted"
    service.wait_state("b1", "running")
    assert service.take("ping", "p1") == "accepted"
    service.wait_state("p1", "done")  # while b1 still runs
    assert service.store.job("b1").state == "running"  # type: ignore[union-attr]
    service.release.set()
    service.wait_state("b1", "done")
    assert service.events("p1") == ["accepted", "started", "done", "result"]
    assert service.events("b1") == ["accepted", "started", "progress", "done", "result"]


def test_a_full_queue_rejects_without_remembering(service: Service) -> None:
    for index in range(5):
        assert service.take("bench", f"q{index}", model="digits") == "accepted"
    assert service.take("bench", "late", model="digits") == "rejected:queue_full"
    service.release.set()
    service.jobs.start()
    service.wait_state("q4", "done")
    assert service.take("bench", "late", model="digits") == "accepted"  # the same id, once there is room
    assert service.ran == [f"q{index}" for index in range(5)]


def test_a_command_without_a_handler_is_unsupported_and_that_is_remembered(service: Service) -> None:
    assert service.take("profile", "pr1", model="digits") == "rejected:unsupported"
    assert service.take("profile", "pr1", model="digits") == "duplicate"
    assert [m["code"] for m in service.messages()] == ["unsupported", "unsupported"]


def test_cancel_a_queued_and_a_running_job(service: Service) -> None:
    service.take("bench", "run", model="digits")
    service.take("bench", "wait", model="digits")
    service.jobs.start()
    deadline = time.monotonic() + 10
    while "run" not in service.ran:  # its handler runs: "started" is published before it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert service.take("cancel", "c1", target="wait") == "accepted"
    assert service.take("cancel", "c2", target="run") == "accepted"
    service.wait_state("run", "cancelled")
    time.sleep(0.2)
    assert service.ran == ["run"]  # the queued one never started
    assert service.events("wait") == ["accepted", "cancelled", "result"]
    assert service.events("run") == ["accepted", "started", "cancelled", "result"]  # one result only
    results = {m["command_id"]: m for m in service.messages() if m["schema"] == "edge-agent/result/1"}
    assert results["c1"]["report"] == {"target": "wait", "was": "queued"}
    assert results["c2"]["report"] == {"target": "run", "was": "running"}
    assert service.take("cancel", "c3", target="nobody") == "rejected:unknown_target"


def test_stopping_requeues_the_running_job(service: Service) -> None:
    service.take("bench", "b1", model="digits")
    service.jobs.start()
    service.wait_state("b1", "running")
    service.jobs.stop(grace_s=0.1)
    assert service.store.job("b1").state == "queued"  # type: ignore[union-attr]
    assert service.events("b1") == ["accepted", "started"]


def test_duplicates_are_answered_from_the_store(service: Service) -> None:
    service.take("bench", "d1", model="digits")
    assert service.take("bench", "d1", model="digits") == "duplicate"
    duplicate = service.messages()[-1]
    assert (duplicate["event"], duplicate["detail"]) == ("accepted", {"duplicate": True})
    assert service.store.count_jobs("queued") == 1


def test_readings_of_a_captured_jetson_and_an_hwmon_power_sensor(tmp_path: Path) -> None:
    jetson = Readings(str(BOARDS / "jetson-orin-nano")).read()
    assert jetson["max_temperature_c"] == 48.2 and jetson["cpu_mhz"]["max"] == 1728.0
    assert jetson["memory_mb"]["total"] > 7000 and jetson["throttled"] is False
    rail = tmp_path / "sys" / "class" / "hwmon" / "hwmon3"
    rail.mkdir(parents=True)
    for name, value in (("name", "ina3221"), ("in1_label", "VDD_IN"), ("in1_input", "5000"),
                        ("curr1_input", "1200"), ("power1_input", "2500000")):
        (rail / name).write_text(value + "\n")
    readings = Readings(str(tmp_path)).read()
    assert readings["power_w"] == {"ina3221:VDD_IN": 6.0, "ina3221:power1": 2.5}


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 4.0)
    waits = [backoff.next() for _ in range(8)]
    for wait, ceiling in zip(waits, [0.5, 1, 2, 4, 4, 4, 4, 4]):
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(waits)) == len(waits)  # jittered
    backoff.reset()
    assert backoff.next() <= 0.5
