"""The agent's connection to the broker: paho-mqtt 2.x, MQTT 5 (3.1.1 fallback), and the outbox pump.

paho's network thread (`loop_start`) reads and writes the socket and reconnects; its callbacks only
record what happened and return. A second thread, the pump, does everything that may block: it runs
the `OutboxPump` (agent/mqtt/outbox.py: the store's messages in order, at most `inflight`
unacknowledged, deleted only on PUBACK), and swaps the client for an MQTT 3.1.1 one when the broker
refuses MQTT 5 (`protocol = "auto"`). Commands arrive with
manual acknowledgement: the broker gets the PUBACK only after the daemon has recorded the command
(`Link.ack`), so a command received just before a crash is delivered again, not lost.

Reconnection: paho waits between attempts; before each wait the link sets that wait itself, a capped
exponential backoff with jitter (`Backoff`). Presence: a retained `offline` status is the last will,
a retained `online` status is published on every connection, and `stop` publishes `offline` itself
before a clean disconnect (which suppresses the will).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from agent.config import MqttSettings, broker_password
from agent.mqtt.outbox import OutboxPump, OutboxStore
from agent.mqtt.protocol import Topics

_log = logging.getLogger(__name__)
_IDLE_POLL_S = 5.0
_UNSUPPORTED_PROTOCOL = 132  # CONNACK reason: what an MQTT 3.1.1 broker answers an MQTT 5 client


@dataclass(frozen=True)
class Inbound:
    """A command message as it arrived, with its MQTT 5 reply properties; `Link.ack` takes it back."""

    topic: str
    payload: bytes
    response_topic: Optional[str]
    correlation_data: Optional[bytes]
    mid: int
    qos: int
    client: Any


class Backoff:
    """Capped exponential backoff with jitter: the n-th wait is uniform in [d/2, d], d = min(cap, low * 2**n)."""

    def __init__(self, low: float, cap: float) -> None:
        self.low, self.cap, self.attempts = low, cap, 0

    def next(self) -> float:
        """The next wait in seconds (and count the attempt)."""
        delay = min(self.cap, self.low * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Connected: the next failure waits the shortest time again."""
        self.attempts = 0


def make_client(mqtt: MqttSettings, client_id: str, username: Optional[str], version5: bool,
                manual_ack: bool = False, persistent: bool = False) -> Any:
    """A paho client set up for `mqtt`: protocol, TLS with CA verification (or a client certificate),
    credentials. `persistent` keeps the session (subscriptions, queued commands) across connections."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    protocol = paho.MQTTv5 if version5 else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         clean_session=None if version5 else not persistent, manual_ack=manual_ack)
    if mqtt.tls:
        client.tls_set(ca_certs=None if mqtt.ca_file is None else str(mqtt.ca_file),
                       certfile=None if mqtt.cert_file is None else str(mqtt.cert_file),
                       keyfile=None if mqtt.key_file is None else str(mqtt.key_file),
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.tls_insecure_set(mqtt.insecure)
    if username is not None:
        client.username_pw_set(username, broker_password(mqtt))
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """Send small packets at once: without TCP_NODELAY, a PUBACK followed by an event waits for the
    peer's delayed ACK (tens of milliseconds) under Nagle's algorithm."""
    import socket

    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_properties(version5: bool, session_expiry_s: int) -> Any:
    """CONNECT properties for MQTT 5 (how long the broker keeps the session), None for 3.1.1."""
    if not version5:
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    return properties


class Link:
    """The broker connection of one device: subscriptions, presence, commands in, outbox out."""

    def __init__(self, mqtt: MqttSettings, topics: Topics, store: OutboxStore, username: Optional[str],
                 on_command: Callable[[Inbound], None], status: Callable[[str], bytes]) -> None:
        self.mqtt, self.topics, self.store, self.username = mqtt, topics, store, username
        self.on_command, self.status = on_command, status
        self.connected = threading.Event()
        self.version5 = mqtt.protocol != "3.1.1"
        self._backoff = Backoff(mqtt.reconnect_min_s, mqtt.reconnect_max_s)
        self.pump = OutboxPump(store, mqtt.inflight)
        self._downgrade = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._client: Any = None
        self._pump_thread = threading.Thread(target=self._pump_loop, name="outbox-pump", daemon=True)

    # Life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the pump."""
        self._client = self._new_client()
        self._pump_thread.start()

    def wake(self) -> None:
        """New messages are in the outbox: publish them now."""
        self._wake.set()

    def ack(self, inbound: Inbound) -> None:
        """The command is recorded: acknowledge it to the broker (QoS 1)."""
        if inbound.qos > 0:
            inbound.client.ack(inbound.mid, inbound.qos)

    def stop(self, flush_s: float = 5.0) -> None:
        """Publish `offline`, give the outbox up to `flush_s` to drain, disconnect cleanly (no will)."""
        client = self._client
        if self.connected.is_set():
            deadline = time.monotonic() + flush_s
            while time.monotonic() < deadline and (self.pump.pending() or self.store.outbox_size()[0]):
                self._wake.set()
                time.sleep(0.02)
            self._stopping.set()
            info = client.publish(self.topics.topic("status"), self.status("offline"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # lost the connection meanwhile
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            client.disconnect()
        self._stopping.set()
        self._wake.set()
        client.loop_stop()
        if self._pump_thread.is_alive():
            self._pump_thread.join()
        self.connected.clear()

    def _new_client(self) -> Any:
        client = make_client(self.mqtt, self.topics.device_id, self.username, self.version5,
                             manual_ack=True, persistent=True)
        client.will_set(self.topics.topic("status"), self.status("offline"), qos=1, retain=True)
        client.max_inflight_messages_set(self.mqtt.inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.reconnect_delay_set(self.mqtt.reconnect_min_s, self.mqtt.reconnect_min_s)
        client.connect_async(self.mqtt.host, self.mqtt.port, self.mqtt.keepalive_s, clean_start=False,
                             properties=connect_properties(self.version5, self.mqtt.session_expiry_s))
        self.pump.attach(client, self.version5)
        client.loop_start()
        return client

    # paho callbacks (network thread): record and return -----------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if reason == _UNSUPPORTED_PROTOCOL and self.mqtt.protocol == "auto" and self.version5:
                _log.warning("the broker does not speak MQTT 5: falling back to MQTT 3.1.1")
                self._downgrade = True
                self._wake.set()
            else:
                _log.error("the broker refused the connection: %s", reason)
            self._plan_retry(client)
            return
        self._backoff.reset()
        client.subscribe([(topic, 1) for topic in self.topics.subscriptions()])
        client.publish(self.topics.topic("status"), self.status("online"), qos=1, retain=True)
        _log.info("connected to %s:%d (MQTT %s)", self.mqtt.host, self.mqtt.port, "5" if self.version5 else "3.1.1")
        self.connected.set()
        self._wake.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = sys.exc_info()[1]  # paho calls this inside its `except OSError` around the connect
        _log.warning("cannot reach the broker at %s:%d: %s", self.mqtt.host, self.mqtt.port, error or "failed")
        self._plan_retry(client)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._stopping.is_set():
            _log.warning("lost the broker connection: %s", reason)
        self.connected.clear()
        self.pump.connection_lost()
        self._plan_retry(client)

    def _plan_retry(self, client: Any) -> None:
        delay = self._backoff.next()
        client.reconnect_delay_set(delay, delay)  # paho's next wait is exactly this

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        properties = getattr(message, "properties", None)
        self.on_command(Inbound(message.topic, bytes(message.payload),
                                getattr(properties, "ResponseTopic", None),
                                getattr(properties, "CorrelationData", None), message.mid, message.qos, client))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.pump.acked(mid, reason)
        self._wake.set()

    # The pump thread: everything that may block ----------------------------------------------

    def _pump_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_IDLE_POLL_S)  # woken by new messages, acks and connections
            self._wake.clear()
            if self._downgrade:
                self._downgrade = False
                self._client.loop_stop()
                self.version5 = False
                self._client = self._new_client()
            try:
                self.pump.run_once(self.connected.is_set())
            except Exception:  # a broken store must not end the pump silently
                _log.exception("outbox pump failed; retrying in a second")
                time.sleep(1.0)
