"""The other side of the protocol: a small coordinator that sends commands to boards and follows them.

`Coordinator` connects like an agent does (same TLS and credential settings, `agent.mqtt.link`'s
client factory), subscribes before it publishes, sends a command to a device, a group or everyone,
and yields the replies that carry its command id as they arrive; `watch` yields the boards' status
and telemetry. `edge-agent fleet` (agent/commands/fleet.py) prints them; tests and scripts use it
as a library.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from agent.config import MqttSettings
from agent.errors import FleetError, ProtocolError
from agent.mqtt.link import connect_properties, make_client
from agent.mqtt.protocol import (
    Command,
    Event,
    Message,
    Result,
    decode_message,
    encode_command,
    new_command_id,
    target_topic,
)

CONNECT_TIMEOUT_S = 10.0
FINAL_EVENTS = ("rejected", "done", "failed", "cancelled", "interrupted")


@dataclass
class Tally:
    """Who answered a command so far: devices seen, and those whose answer is final."""

    seen: Set[str] = field(default_factory=set)
    final: Dict[str, str] = field(default_factory=dict)  # device -> rejected/done/failed/...
    last_new: float = field(default_factory=time.monotonic)

    def add(self, message: Message) -> None:
        """Count one reply."""
        if message.device not in self.seen:
            self.seen.add(message.device)
            self.last_new = time.monotonic()
        if isinstance(message, Result):
            self.final[message.device] = message.status
        elif isinstance(message, Event) and message.event == "rejected":
            self.final[message.device] = "rejected"


class Coordinator:
    """A connected dashboard client; use as a context manager."""

    def __init__(self, mqtt: MqttSettings, username: Optional[str] = None, session: Optional[str] = None) -> None:
        """Connect; `session` names a persistent session (the client id): the broker then keeps this
        client's subscriptions and queues its messages while it is disconnected, and paho reconnects."""
        self.mqtt, self.username, self.session = mqtt, username, session
        self.root = mqtt.root
        self.received: queue.Queue = queue.Queue()  # of (topic, payload, MQTT 5 correlation data or None)
        self._answers: Dict[int, Any] = {}
        self._answered = threading.Condition()
        self._connack: Optional[Any] = None
        self._connected = threading.Event()
        self.version5 = mqtt.protocol != "3.1.1"
        self.client = self._connect()

    def _connect(self) -> Any:
        persistent = self.session is not None
        client = make_client(self.mqtt, self.session or f"edge-fleet-{uuid.uuid4().hex[:12]}", self.username,
                             self.version5, persistent=persistent)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = client.on_publish = self._on_answer
        client.reconnect_delay_set(0.1, 2.0)
        try:
            client.connect(self.mqtt.host, self.mqtt.port, self.mqtt.keepalive_s, clean_start=not persistent,
                           properties=connect_properties(self.version5, self.mqtt.session_expiry_s)
                           if persistent else None)
        except (OSError, ValueError) as error:
            raise FleetError(f"cannot reach the broker at {self.mqtt.host}:{self.mqtt.port}: {error}") from None
        client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            client.loop_stop()
            raise FleetError(f"no answer from the broker at {self.mqtt.host}:{self.mqtt.port}")
        if self._connack.is_failure:  # type: ignore[union-attr]
            client.disconnect()
            client.loop_stop()
            if self._connack == 132 and self.mqtt.protocol == "auto" and self.version5:
                self.version5, self._connack = False, None
                self._connected.clear()
                return self._connect()
            raise FleetError(f"the broker refused the connection: {self._connack}")
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set():
            return  # a reconnection (persistent session): the broker kept the subscriptions
        self._connack = reason
        if reason.is_failure:
            client.disconnect()  # no automatic retries
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        correlation = getattr(getattr(message, "properties", None), "CorrelationData", None)
        self.received.put((message.topic, bytes(message.payload), correlation))

    def _on_answer(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._answered:
            self._answers[mid] = reason
            self._answered.notify_all()

    def _wait(self, mid: int, what: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
        with self._answered:
            if not self._answered.wait_for(lambda: mid in self._answers, timeout):
                raise FleetError(f"the broker did not acknowledge {what}")
            return self._answers.pop(mid)

    def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        _, mid = self.client.subscribe([(topic, 1) for topic in topics])
        self._wait(mid, "the subscription")

    def send(self, target: str, cmd: str, args: Optional[Dict[str, Any]] = None, command_id: Optional[str] = None,
             response_topic: Optional[str] = None) -> Command:
        """Publish a command (QoS 1) to `target` (a device id, `group:NAME` or `all`) and wait for its
        PUBACK; subscribe to the replies first with `follow`."""
        command = Command(command_id or new_command_id(), cmd, args or {}, response_topic)
        return self.publish(target, command, encode_command(command))

    def publish(self, target: str, command: Command, payload: bytes) -> Command:
        """Publish a prepared payload for `command` (tests send malformed ones this way)."""
        properties = None
        if command.response_topic and self.version5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = command.response_topic
            if command.correlation_data is not None:
                properties.CorrelationData = command.correlation_data
        try:
            topic = target_topic(target, self.root)
        except ProtocolError as error:
            raise FleetError(f"bad target {target!r}: {error.message}") from None
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        reason = self._wait(info.mid, f"the command on {topic}")
        if getattr(reason, "is_failure", False):
            raise FleetError(f"the broker refused the command on {topic}: {reason}")
        return command

    def follow(self, target: str) -> None:
        """Subscribe to the events and results of `target` (every device for a group or `all`)."""
        device = "+" if target == "all" or target.startswith("group:") else target
        self.subscribe(f"{self.root}/{device}/events", f"{self.root}/{device}/results")

    def replies(self, command_id: str, single: bool, timeout_s: float,
                settle_s: float = 3.0) -> Iterator[Message]:
        """The replies about `command_id` as they arrive, until every device that answered has a final
        answer (for a group: and no new device for `settle_s`), or FleetError after `timeout_s`."""
        tally = Tally()
        deadline = time.monotonic() + timeout_s
        while True:
            done = tally.seen and len(tally.final) == len(tally.seen)
            if done and (single or time.monotonic() - tally.last_new >= settle_s):
                return
            wait = deadline - time.monotonic()
            if wait <= 0:
                pending = sorted(tally.seen - set(tally.final)) or ["any device"]
                raise FleetError(f"no final answer from {', '.join(pending)} within {timeout_s:g} s")
            try:
                _, payload, _ = self.received.get(timeout=min(wait, 0.2) if done else wait)
            except queue.Empty:
                continue
            message = _decode(payload)
            if message is None or getattr(message, "command_id", None) != command_id:
                continue
            tally.add(message)
            yield message

    def watch(self, duration_s: Optional[float], events: bool = False) -> Iterator[Tuple[str, Message]]:
        """Status and telemetry (and events and results with `events`) of every board, as they come."""
        kinds: List[str] = ["status", "telemetry"] + (["events", "results"] if events else [])
        self.subscribe(*[f"{self.root}/+/{kind}" for kind in kinds])
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while deadline is None or time.monotonic() < deadline:
            try:
                topic, payload, _ = self.received.get(timeout=0.5 if deadline is None else
                                                      max(0.0, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                continue
            message = _decode(payload)
            if message is not None:
                yield topic, message

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _decode(payload: bytes) -> Optional[Message]:
    try:
        return decode_message(payload)
    except ProtocolError:
        return None  # not an agent's message (e.g. someone else's traffic): ignored
