"""Bad input: generated payloads (tests/support/payloads.py), every one rejected with a code.

Two parts. In process, 10,000 payloads go through the daemon's own intake (`Intake.take`, with its
real SQLite store): each is answered by exactly one `rejected` event with a known code, and no job
is ever queued. Over the wire, a few hundred more (EDGE_AGENT_FUZZ_WIRE, default 300) are published
to a running `edge-agent run` with MQTT 5 correlation data, so each rejection is matched to its
payload; the daemon stays up and its resident memory does not grow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.agent import (
    AgentProcess,
    coordinator,
    no_stray_agents,  # noqa: F401 (an autouse fixture)
    wait_status,
)
from support.broker import NEEDS_MOSQUITTO, Broker
from support.payloads import invalid_payloads

from agent.mqtt.protocol import Command, Limits, Topics
from agent.mqtt.schema import ERROR_CODES
from agent.service.intake import Intake
from agent.service.lanes import JOBS, QUICK, Lane
from agent.service.replies import DAEMON_REJECTIONS, Replies
from agent.service.store import Store

IN_PROCESS = 10_000
OVER_THE_WIRE = int(os.environ.get("EDGE_AGENT_FUZZ_WIRE", "300"))
CODES = set(ERROR_CODES) | set(DAEMON_REJECTIONS)
RSS_GROWTH_LIMIT_KB = 2048
SEEN: List[str] = []  # the code of every in-process rejection, for the coverage check


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    # On tmpfs where there is one: every answer is still a committed SQLite transaction, but its fsync
    # costs nothing, so 10,000 payloads take seconds (durability itself is tested elsewhere).
    folder = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else tmp_path_factory.mktemp("fuzz")
    store = Store(folder / "agent.db")
    replies = Replies(Topics("dev-fuzz", ("lab",)))
    lanes = [Lane("quick", QUICK, store, replies, dict.fromkeys(("ping", "info", "models")), lambda: None,
                  lambda: None),  # never started: the intake only queues
             Lane("jobs", JOBS, store, replies, dict.fromkeys(("bench", "eval", "deploy")), lambda: None,
                  lambda: None)]
    taken = Intake(store, replies, lanes, lambda: Limits(), lambda: 256, lambda: None)
    yield taken
    store.close()
    shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=IN_PROCESS, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(invalid_payloads)
def test_every_generated_payload_is_rejected_in_process(intake: Intake, payload: bytes) -> None:
    answer = intake.take(payload)
    assert answer == "duplicate" or answer.split(":", 1)[1] in CODES, answer
    [entry] = intake.store.outbox_pending()  # exactly one message: its rejection
    message = json.loads(entry.message.payload)
    assert message["event"] == "rejected" and message["code"] in CODES, message
    assert intake.store.count_jobs("queued", "running", "done") == 0
    intake.store.outbox_ack(entry.id)  # as if published
    SEEN.append(message["code"])


def test_the_in_process_run_covers_every_kind_of_fault(intake: Intake) -> None:
    """Runs after the property test above (same module-scoped store): the codes it saw."""
    assert len(SEEN) >= IN_PROCESS
    codes = set(SEEN)
    assert codes >= {"invalid_json", "not_an_object", "missing_field", "wrong_type", "bad_value",
                     "unknown_command", "unknown_argument", "too_large", "bad_model_name"}, codes


@pytest.mark.mqtt
@NEEDS_MOSQUITTO
def test_generated_payloads_over_mqtt_are_rejected_and_memory_stays_flat(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt")
    drawn: List[List[bytes]] = []

    @settings(max_examples=1, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(invalid_payloads, min_size=OVER_THE_WIRE + 100, max_size=OVER_THE_WIRE + 100))
    def draw(payloads: List[bytes]) -> None:
        drawn.append(payloads)

    draw()
    warmup, payloads = drawn[0][:100], drawn[0][100:]
    with Broker(tmp_path / "broker") as broker:
        agent = AgentProcess(tmp_path / "agent", broker, device_id=f"dev-{uuid.uuid4().hex[:8]}").start()
        with coordinator(broker) as fleet:
            wait_status(fleet, agent.device_id)
            reply_topic = f"edge/{agent.device_id}/reply/fuzz"
            fleet.subscribe(reply_topic)
            send_all(fleet, agent.device_id, reply_topic, warmup)
            time.sleep(0.5)
            rss_before = agent.rss_kb()
            rejected = send_all(fleet, agent.device_id, reply_topic, payloads)
            time.sleep(0.5)
            rss_after = agent.rss_kb()
        assert agent.alive(), agent.log()
        assert agent.stop() == 0
    assert sorted(rejected) == list(range(len(payloads)))
    print(f"over MQTT: {len(payloads)} payloads rejected; RSS {rss_before} -> {rss_after} kB")
    assert rss_after - rss_before <= RSS_GROWTH_LIMIT_KB, (rss_before, rss_after)


def send_all(fleet: object, device: str, reply_topic: str, payloads: List[bytes]) -> List[int]:
    """Publish each payload with its index as correlation data; return the indexes rejected."""
    for index, payload in enumerate(payloads):
        command = Command("fuzz", "ping", response_topic=reply_topic, correlation_data=str(index).encode())
        fleet.publish(device, command, payload)  # type: ignore[attr-defined]
    rejected: List[int] = []
    deadline = time.monotonic() + 60
    while len(rejected) < len(payloads):
        topic, payload, correlation = fleet.received.get(timeout=max(0.01, deadline - time.monotonic()))  # type: ignore
        if topic != reply_topic:
            continue
        message = json.loads(payload)
        assert message["event"] == "rejected" and message["code"] in CODES, message
        rejected.append(int(correlation))
    return rejected
