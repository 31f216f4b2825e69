"""Past one broker: a site Mosquitto bridged to a central one with the shipped deploy/mosquitto/bridge.conf (only
its address and password changed), passwords and the shipped ACL on both, the boards on the site broker and the
coordinator on the central one. A result published at the site is stored by the coordinator; a fleet job
reaches a real agent at the site and its result comes back; the bridge cut (a relay between the two brokers
closes its connection and refuses new ones) and restored mid-stream loses nothing."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest
from support.agent import AgentProcess, mqtt_settings, no_stray_agents  # noqa: F401
from support.broker import NEEDS_MOSQUITTO, Broker
from support.coordinator import CoordinatorProcess, board_states, finished_job, stored_results, wait_for
from support.fleet import RealReports, publish_results
from support.relay import Relay

from agent.fleet.client import Coordinator
from agent.fleet.store.database import open_store

pytestmark = [NEEDS_MOSQUITTO]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORD = "bridge-test-password"
SITE_BOARDS = ("board-0", "board-a")


def accounts(folder: Path, names: List[str], acl: str) -> Tuple[Path, Path]:
    """A password file with `names` (all with PASSWORD) and an ACL file with the text `acl`."""
    folder.mkdir(parents=True, exist_ok=True)
    passwords = folder / "passwd"
    passwords.write_text("".join(f"{name}:{PASSWORD}\n" for name in names))
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, timeout=30)
    (folder / "acl").write_text(acl)
    return passwords, folder / "acl"


def bridge_config(address: str) -> str:
    """The shipped bridge.conf with the central broker's address and the bridge's password, without TLS."""
    values = {"address": address, "remote_password": PASSWORD, "bridge_cafile": None}
    lines = []
    for line in (DEPLOY / "bridge.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in values:
            if values[key] is not None:
                lines.append(f"{key} {values[key]}")
        else:
            lines.append(line)
    return "\n".join(lines)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Tuple[Broker, Relay, Broker]]:
    """The central broker, the relay in front of it, and the site broker bridged to it through the relay."""
    shipped = (DEPLOY / "acl").read_text()
    central_files = accounts(tmp_path / "central-auth", ["coordinator", "bridge-site-01"],
                             shipped + "\n" + (DEPLOY / "acl-bridge").read_text())
    board_blocks = "".join(f"user {board}\ntopic read edge/all/cmd\ntopic read edge/group/lab/cmd\n"
                           for board in SITE_BOARDS)
    site_files = accounts(tmp_path / "site-auth", list(SITE_BOARDS), shipped + "\n" + board_blocks)
    with Broker(tmp_path / "central", *central_files) as central:
        relay = Relay(central.port)
        extra = bridge_config(f"127.0.0.1:{relay.port}") + "\nmax_queued_messages 10000"
        with Broker(tmp_path / "site", *site_files, extra_config=extra) as site:
            wait_for("the bridge connected", lambda: "as bridge-site-01" in central.log(), timeout=20)
            yield central, relay, site
        relay.close()


@pytest.fixture
def service(tmp_path: Path, sites: Tuple[Broker, Relay, Broker]) -> Iterator[CoordinatorProcess]:
    """The coordinator on the central broker, logged in as `coordinator`, on SQLite."""
    started = CoordinatorProcess(tmp_path / "coordinator", sites[0], str(tmp_path / "coordinator.db"), settings={
        "mqtt": {"username": "coordinator", "password": PASSWORD}}).start()
    wait_for("subscribed", lambda: "connected to the broker" in started.log())
    yield started
    started.kill()


def test_a_site_broker_delivers_to_the_central_one_and_commands_come_back(
        tmp_path: Path, sites: Tuple[Broker, Relay, Broker], service: CoordinatorProcess, real: RealReports) -> None:
    _, _, site = sites
    sent = _publish(site, real, 5)
    store = open_store(str(tmp_path / "coordinator.db"))
    try:
        wait_for("the site's results stored centrally", lambda: stored_results(store) >= sent, timeout=30)
    finally:
        store.close()
    agent = AgentProcess(tmp_path / "board-a", site, device_id="board-a", settings={
        "mqtt": {"username": "board-a", "password": PASSWORD}}).start()
    wait_for("board-a online centrally", lambda: board_states(service).get("board-a") == "online", timeout=30)
    status, job = service.api.call("POST", "/api/v1/jobs", {"target": "board-a", "cmd": "ping", "args": {}})
    assert status == 202, job
    done = wait_for("the ping done", lambda: finished_job(service, job["id"]), timeout=60)
    assert done["boards"][0]["state"] == "done" and done["boards"][0]["result_id"] is not None
    agent.stop()


def test_the_bridge_cut_and_restored_mid_stream_loses_nothing(
        tmp_path: Path, sites: Tuple[Broker, Relay, Broker], service: CoordinatorProcess, real: RealReports) -> None:
    _, relay, site = sites
    store = open_store(str(tmp_path / "coordinator.db"))
    sent: Set[Tuple[str, str]] = set()
    stream = threading.Thread(target=lambda: sent.update(_publish(site, real, 150, every_s=0.02)))
    stream.start()
    try:
        wait_for("the stream under way", lambda: len(stored_results(store)) >= 20, timeout=60, every=0.05)
        relay.cut()
        time.sleep(1)  # what the coordinator had received is stored meanwhile
        during = len(stored_results(store))
        time.sleep(2)
        assert len(stored_results(store)) == during  # the link is down: nothing arrives
        relay.restore()
        stream.join(timeout=120)
        wait_for("every result stored after the bridge came back", lambda: stored_results(store) >= sent,
                 timeout=60)
        assert stored_results(store) == sent and len(sent) == 150
    finally:
        store.close()


def _publish(site: Broker, real: RealReports, count: int, every_s: float = 0.0) -> Set[Tuple[str, str]]:
    """Results of board-0 published at the site, logged in as board-0."""
    with Coordinator(mqtt_settings(site, password=PASSWORD), username="board-0") as board:
        return publish_results(board, ["board-0"], real.host, count, every_s)
