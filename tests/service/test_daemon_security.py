"""The daemon against the shipped broker set-up (deploy/mosquitto): TLS with CA verification,
per-device passwords, the ACL. The broker-side rules themselves are tested in test_broker_acl.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from support.agent import (
    AgentProcess,
    no_stray_agents,  # noqa: F401 (an autouse fixture)
    wait_status,
)
from support.broker import NEEDS_MOSQUITTO
from support.cli import run_cli
from support.sample_broker import Fleet, make_tls, sample_broker

from agent.config import MqttSettings
from agent.fleet.client import Coordinator
from agent.mqtt.protocol import Command, encode_command

pytestmark = [
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed"),
]
pytest.importorskip("paho.mqtt")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with sample_broker(tmp_path_factory.mktemp("secure-broker"),
                       {"dev-a": ["lab"], "dev-b": ["ops"], "dashboard": None}) as running:
        yield running


def password_file(folder: Path, fleet: Fleet, user: str, password: str = "") -> Path:
    path = folder / f"{user}.password"
    path.write_text((password or fleet.passwords[user]) + "\n")
    return path


def tls_settings(fleet: Fleet, folder: Path, user: str, password: str = "", ca: Path = None) -> Dict[str, Any]:
    return {"host": "127.0.0.1", "port": fleet.broker.tls_port, "tls": True, "ca_file": str(ca or fleet.ca),
            "password_file": str(password_file(folder, fleet, user, password)), "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5}


def dashboard(fleet: Fleet, folder: Path) -> Coordinator:
    return Coordinator(MqttSettings(host="127.0.0.1", port=fleet.broker.operator_port, tls=True, ca_file=fleet.ca,
                                    password_file=password_file(folder, fleet, "dashboard")), "dashboard")


def test_agent_over_tls_with_its_password_serves_the_dashboard(tmp_path: Path, fleet: Fleet) -> None:
    agent = AgentProcess(tmp_path, fleet.broker, device_id="dev-a", settings={"mqtt": tls_settings(fleet, tmp_path,
                                                                                                    "dev-a")}).start()
    with dashboard(fleet, tmp_path) as board:
        wait_status(board, "dev-a")
    sent = run_cli("fleet", "send", "group:lab", "ping", "--settle", "1", "--json", "--host", "127.0.0.1",
                   "--port", str(fleet.broker.operator_port), "--tls", "--ca-file", str(fleet.ca),
                   "--username", "dashboard", "--password-file", str(tmp_path / "dashboard.password"))
    assert sent.code == 0, sent.stderr
    assert '"status":"done"' in sent.stdout and '"device":"dev-a"' in sent.stdout
    agent.stop()


def test_a_reply_the_acl_forbids_is_dropped_and_the_outbox_moves_on(tmp_path: Path, fleet: Fleet) -> None:
    """A response topic under another device is refused by the broker (PUBACK: not authorized); the
    agent drops that copy, logs it, and keeps publishing."""
    agent = AgentProcess(tmp_path, fleet.broker, device_id="dev-a", settings={"mqtt": tls_settings(fleet, tmp_path,
                                                                                                    "dev-a")}).start()
    with dashboard(fleet, tmp_path) as board:
        wait_status(board, "dev-a")
        board.follow("dev-a")
        command = Command("acl-1", "ping", response_topic="edge/dev-b/results")
        board.publish("dev-a", command, encode_command(command))
        assert getattr(list(board.replies("acl-1", True, 20))[-1], "status", None) == "done"
        follow_up = board.send("dev-a", "ping")
        assert [m.KIND for m in board.replies(follow_up.id, True, 20)][-1] == "result"
    assert "the broker refused outbox message" in agent.log()
    agent.stop()


@pytest.mark.parametrize("problem", ["wrong password", "another CA"])
def test_the_agent_stays_offline_and_retries_when_refused(tmp_path: Path, fleet: Fleet, problem: str) -> None:
    settings = tls_settings(fleet, tmp_path, "dev-b", password="not-it" if problem == "wrong password" else "",
                            ca=make_tls(tmp_path / "other").ca if problem == "another CA" else None)
    agent = AgentProcess(tmp_path, fleet.broker, device_id="dev-b", settings={"mqtt": settings}).start()
    time.sleep(2.0)
    assert agent.alive()
    log = agent.log()
    assert "connected to" not in log
    expected = "refused the connection: Not authorized" if problem == "wrong password" else "certificate verify failed"
    assert log.count(expected) >= 2, log  # it keeps trying, with backoff
    agent.stop()
