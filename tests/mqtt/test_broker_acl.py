"""The sample broker set-up (deploy/mosquitto) on a real Mosquitto: passwords, the ACL, and TLS.

The shipped mosquitto.conf is used with only its file paths and port numbers changed; credentials
come from the shipped make-device-credentials script; clients are paho-mqtt over MQTT 5. Boards
connect through the boards' TLS listener, operators (the dashboard) through theirs, both with CA
verification on; the plain loopback listener is the operators' too.
"""

from __future__ import annotations

import queue
import shutil
import ssl
import threading
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
from support.broker import NEEDS_MOSQUITTO
from support.sample_broker import DEPLOY, Fleet, make_credentials, make_tls, sample_broker

WAIT_S = 3.0  # for what must arrive
LISTENERS = ("boards", "operators", "loopback")
OPERATORS = ("dashboard", "coordinator")
QUIET_S = 0.3  # for what must not: checked after a later message that did arrive

pytestmark = [
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed"),
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with sample_broker(tmp_path_factory.mktemp("fleet-broker"),
                       {"dev-a": ["lab"], "dev-b": ["ops"], "dashboard": None, "coordinator": None}) as running:
        yield running


class Peer:
    """A paho MQTT 5 client that records what it receives and how the broker answered it."""

    def __init__(self, fleet: Fleet, user: Optional[str], password: Optional[str], listener: str = "boards",
                 ca: Optional[Path] = None, client_id: Optional[str] = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: queue.Queue = queue.Queue()  # of (topic, payload)
        self.answers: Dict[int, object] = {}
        self._answered = threading.Condition()
        self._connected = threading.Event()
        self.connack: object = None
        self.disconnected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"{user}-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password)
        if listener != "loopback":
            self.client.tls_set(ca_certs=str(ca or fleet.ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda client, userdata, message: self.received.put(
            (message.topic, message.payload))
        self.client.on_publish = self._on_answer
        self.client.on_subscribe = self._on_answer
        self.client.on_disconnect = lambda client, userdata, flags, reason, props: self.disconnected.set()
        ports = {"boards": fleet.broker.tls_port, "operators": fleet.broker.operator_port,
                 "loopback": fleet.broker.port}
        self.client.connect("127.0.0.1", ports[listener])
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"

    def _on_connect(self, client: object, userdata: object, flags: object, reason: object, props: object) -> None:
        self.connack = reason
        if reason.is_failure:  # type: ignore[attr-defined]
            self.client.disconnect()  # no automatic retries
        self._connected.set()

    def _on_answer(self, client: object, userdata: object, mid: int, reason: object, props: object) -> None:
        """Record the broker's answer (PUBACK reason code or SUBACK reason codes) to message `mid`."""
        with self._answered:
            self.answers[mid] = reason
            self._answered.notify_all()

    @property
    def accepted(self) -> bool:
        return not self.connack.is_failure  # type: ignore[attr-defined]

    def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK (Mosquitto grants even what the ACL will filter)."""
        result, mid = self.client.subscribe([(topic, 1) for topic in topics])
        assert result == 0
        self._answer(mid, "SUBACK")

    def publish(self, topic: str, payload: bytes) -> object:
        """Publish at QoS 1 and return the broker's PUBACK reason code."""
        return self._answer(self.client.publish(topic, payload, qos=1).mid, f"PUBACK for {topic}")

    def _answer(self, mid: int, what: str) -> object:
        with self._answered:
            assert self._answered.wait_for(lambda: mid in self.answers, WAIT_S), f"no {what}"
            return self.answers[mid]

    def collect(self, until: bytes) -> Set[Tuple[str, bytes]]:
        """Everything received up to the message `until`, and anything else within QUIET_S after it."""
        got: Set[Tuple[str, bytes]] = set()
        while not any(payload == until for _, payload in got):
            try:
                got.add(self.received.get(timeout=WAIT_S))
            except queue.Empty:
                raise AssertionError(f"{until!r} never arrived; got {sorted(got)}") from None
        while True:
            try:
                got.add(self.received.get(timeout=QUIET_S))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def peers(fleet: Fleet) -> Iterator[List[Peer]]:
    opened: List[Peer] = []
    yield opened
    for peer in opened:
        peer.close()


def open_peer(peers: List[Peer], fleet: Fleet, user: str, client_id: Optional[str] = None) -> Peer:
    peer = Peer(fleet, user, fleet.passwords[user], "operators" if user in OPERATORS else "boards",
                client_id=client_id)
    peers.append(peer)
    assert peer.accepted, f"{user} was refused: {peer.connack}"
    return peer


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("user,password", [("dev-a", "wrong"), ("dashboard", "wrong"), ("nobody", "x"), (None, None),
                                           ("dev-a", "")])
def test_bad_credentials_are_refused(fleet: Fleet, peers: List[Peer], listener: str, user: Optional[str],
                                     password: Optional[str]) -> None:
    peer = Peer(fleet, user, password, listener)
    peers.append(peer)
    assert not peer.accepted, f"{user}/{password} got in"


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("user", ["dev-a", "dashboard"])
def test_boards_and_operators_each_get_in_on_their_own_listeners_only(fleet: Fleet, peers: List[Peer],
                                                                       listener: str, user: str) -> None:
    peer = Peer(fleet, user, fleet.passwords[user], listener)
    peers.append(peer)
    assert peer.accepted == ((listener == "boards") == (user not in OPERATORS)), (user, listener, peer.connack)


def test_a_board_cannot_take_over_another_boards_client_id(fleet: Fleet, peers: List[Peer]) -> None:
    """Without use_username_as_clientid, a CONNECT with dev-b's client id disconnects dev-b (and the two
    then kick each other off forever); on the boards' listener the id is the username, so dev-b stays."""
    dashboard, b = open_peer(peers, fleet, "dashboard"), open_peer(peers, fleet, "dev-b", client_id="dev-b")
    b.subscribe("edge/dev-b/cmd")
    intruder = open_peer(peers, fleet, "dev-a", client_id="dev-b")
    after = uuid.uuid4().hex.encode()
    assert not dashboard.publish("edge/dev-b/cmd", after).is_failure  # type: ignore[attr-defined]
    assert b.collect(until=after) == {("edge/dev-b/cmd", after)}
    assert not b.disconnected.is_set() and not intruder.disconnected.is_set()


def test_several_operator_clients_share_one_account(fleet: Fleet, peers: List[Peer]) -> None:
    first, second = open_peer(peers, fleet, "dashboard"), open_peer(peers, fleet, "dashboard")
    first.subscribe("edge/#")
    device = open_peer(peers, fleet, "dev-a")
    mark = uuid.uuid4().hex.encode()
    assert not device.publish("edge/dev-a/events", mark).is_failure  # type: ignore[attr-defined]
    assert first.collect(until=mark) == {("edge/dev-a/events", mark)}
    assert not first.disconnected.is_set() and not second.disconnected.is_set()


def test_device_receives_only_its_own_its_groups_and_broadcast_commands(fleet: Fleet, peers: List[Peer]) -> None:
    dashboard, a, b = (open_peer(peers, fleet, user) for user in ("dashboard", "dev-a", "dev-b"))
    # Each device asks for more than it may read; the broker must filter.
    for device in (a, b):
        device.subscribe("edge/#", "edge/dev-a/cmd", "edge/dev-b/cmd", "edge/group/lab/cmd",
                         "edge/group/ops/cmd", "edge/all/cmd")
    run = uuid.uuid4().hex.encode()
    sent = {topic: run + b":" + topic.encode() for topic in (
        "edge/dev-b/cmd", "edge/group/ops/cmd", "edge/dev-a/cmd", "edge/group/lab/cmd", "edge/all/cmd")}
    for topic, payload in sent.items():
        assert not dashboard.publish(topic, payload).is_failure  # type: ignore[attr-defined]
    last = sent["edge/all/cmd"]
    assert {topic for topic, _ in a.collect(until=last)} == {"edge/dev-a/cmd", "edge/group/lab/cmd", "edge/all/cmd"}
    assert {topic for topic, _ in b.collect(until=last)} == {"edge/dev-b/cmd", "edge/group/ops/cmd", "edge/all/cmd"}


def test_device_cannot_publish_as_another_device_or_send_commands(fleet: Fleet, peers: List[Peer]) -> None:
    dashboard, a = open_peer(peers, fleet, "dashboard"), open_peer(peers, fleet, "dev-a")
    dashboard.subscribe("edge/#")
    run = uuid.uuid4().hex.encode()
    for forged in ("edge/dev-b/results", "edge/dev-b/status", "edge/dev-b/cmd", "edge/all/cmd",
                   "edge/group/lab/cmd", "edge/other"):
        reason = a.publish(forged, run + b":forged")
        assert reason.is_failure and "authori" in str(reason).lower(), (forged, str(reason))  # type: ignore
    own = run + b":own"
    assert not a.publish("edge/dev-a/results", own).is_failure  # type: ignore[attr-defined]
    assert dashboard.collect(until=own) == {("edge/dev-a/results", own)}


def test_only_the_coordinator_publishes_alerts_and_it_reaches_every_board(fleet: Fleet, peers: List[Peer]) -> None:
    coordinator, dashboard, a = (open_peer(peers, fleet, user) for user in ("coordinator", "dashboard", "dev-a"))
    dashboard.subscribe("edge/#")
    a.subscribe("edge/dev-a/cmd")
    run = uuid.uuid4().hex.encode()
    for forger in (a, dashboard):
        reason = forger.publish("edge/coordinator/alerts", run + b":forged")
        assert reason.is_failure and "authori" in str(reason).lower(), str(reason)  # type: ignore[attr-defined]
    alert, command = run + b":alert", run + b":command"
    assert not coordinator.publish("edge/coordinator/alerts", alert).is_failure  # type: ignore[attr-defined]
    assert not coordinator.publish("edge/dev-a/cmd", command).is_failure  # type: ignore[attr-defined]
    assert ("edge/coordinator/alerts", alert) in dashboard.collect(until=command)
    assert a.collect(until=command) == {("edge/dev-a/cmd", command)}


def test_tls_rejects_a_broker_certificate_from_another_ca(fleet: Fleet, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other")
    with pytest.raises(ssl.SSLError):
        Peer(fleet, "dev-a", fleet.passwords["dev-a"], ca=other.ca)
    with pytest.raises(ssl.SSLError):
        Peer(fleet, "dashboard", fleet.passwords["dashboard"], "operators", ca=other.ca)


@pytest.mark.parametrize("name", ["all", "group", "dashboard", "coordinator", "a/b", "dev+", "dev#", "x y", "-dev", ""])
def test_credentials_script_refuses_unsafe_or_reserved_names(tmp_path: Path, name: str) -> None:
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    made = make_credentials(tmp_path, name)
    assert made.returncode == 2 and made.stderr
    assert (tmp_path / "acl").read_text() == (DEPLOY / "acl").read_text()
    assert not (tmp_path / "passwd").exists()
    assert make_credentials(tmp_path, "dev-a", "lab/x").returncode == 2


def test_credentials_script_rewrites_a_devices_groups(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    first = make_credentials(tmp_path, "dev-a", "lab")
    again = make_credentials(tmp_path, "dev-a", "orin")
    assert again.returncode == 2 and "--force" in again.stderr and "group/orin" not in (tmp_path / "acl").read_text()
    second = make_credentials(tmp_path, "--force", "dev-a", "orin", "lab")
    assert first.returncode == second.returncode == 0 and first.stdout != second.stdout
    acl = (tmp_path / "acl").read_text()
    block = acl[acl.index("# device dev-a: begin"):]
    assert acl.count("# device dev-a: begin") == 1
    assert block.splitlines()[1:5] == ["user dev-a", "topic read edge/all/cmd", "topic read edge/group/orin/cmd",
                                       "topic read edge/group/lab/cmd"]
    assert (tmp_path / "passwd").read_text().count("dev-a:") == 1


def test_credentials_script_keeps_operators_and_devices_apart(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    assert make_credentials(tmp_path, "--operator", "dashboard").returncode == 0
    assert make_credentials(tmp_path, "--operator", "dashboard").returncode == 2  # exists: --force to reset
    assert make_credentials(tmp_path, "--force", "--operator", "dashboard").returncode == 0
    assert make_credentials(tmp_path, "dev-a").returncode == 0
    refused = make_credentials(tmp_path, "--operator", "dev-a")  # the ACL gives it no operator's rights
    assert refused.returncode == 2 and "no 'user dev-a' block" in refused.stderr
    assert "dashboard:" not in (tmp_path / "passwd").read_text()
    assert "dev-a:" not in (tmp_path / "operators.passwd").read_text()
