"""At-least-once publishing of the store's outbox through a paho client.

The pump publishes messages in the order they were queued, keeps at most `window` of them
unacknowledged, and deletes one from the store only when paho reported it acknowledged (`acked`,
called from `on_publish`: PUBACK for QoS 1, written to the socket for QoS 0), matched through
`MQTTMessageInfo.mid`. Over a reconnection paho resends the unacknowledged QoS 1 messages itself;
QoS 0 ones in flight are forgotten and published again from the store. A message the broker
refuses (an MQTT 5 PUBACK with a failure code, e.g. a topic the ACL forbids) is logged and dropped:
it would be refused again. `acked` and `connection_lost` only record (paho's network thread);
`run_once` does the store work (the link's pump thread).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Tuple

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxMessage:
    """A message to publish: where, what, how; `correlation_data` is the MQTT 5 property of a reply."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    correlation_data: Optional[bytes] = None


@dataclass(frozen=True)
class OutboxEntry:
    """A stored outbox message with the id `outbox_ack` takes once the broker acknowledged it."""

    id: int
    message: OutboxMessage
    created: float


class OutboxStore(Protocol):
    """Where the outbox is kept (the daemon's `agent.service.store.Store`): the pump reads pending
    messages in order and deletes each once the broker acknowledged it."""

    def outbox_pending(self, limit: int = 100) -> List[OutboxEntry]:
        """The oldest `limit` messages not acknowledged yet."""

    def outbox_ack(self, entry_id: int) -> None:
        """Delete a message the broker acknowledged."""

    def outbox_size(self) -> Tuple[int, int]:
        """Messages and payload bytes waiting."""


class OutboxPump:
    """Moves messages from the store to the broker through the client `attach` gave it."""

    def __init__(self, store: OutboxStore, window: int) -> None:
        self.store, self.window = store, window
        self._lock = threading.Lock()
        self._inflight: Dict[int, Tuple[int, int]] = {}  # mid -> (outbox id, qos)
        self._acked: List[Tuple[int, Any]] = []  # (mid, reason code) as on_publish reported them
        self._lost = False
        self._client: Any = None
        self._version5 = True

    def attach(self, client: Any, version5: bool) -> None:
        """Publish through a new client; what the old one had in flight is sent again."""
        with self._lock:
            self._client, self._version5 = client, version5
            self._inflight.clear()
            self._acked.clear()

    def acked(self, mid: int, reason: Any) -> None:
        """paho's on_publish: message `mid` was acknowledged (or refused, per `reason`)."""
        with self._lock:
            self._acked.append((mid, reason))

    def connection_lost(self) -> None:
        """The connection dropped: QoS 0 messages in flight will never be acknowledged."""
        with self._lock:
            self._lost = True

    def pending(self) -> int:
        """Messages published and not acknowledged yet."""
        with self._lock:
            return len(self._inflight)

    def run_once(self, connected: bool) -> None:
        """Delete what was acknowledged, then (when connected) publish up to the window."""
        self._settle()
        if connected:
            self._publish()

    def _settle(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
            done = [(self._inflight.pop(mid), reason) for mid, reason in acked if mid in self._inflight]
            if self._lost:
                self._lost = False
                for mid in [mid for mid, (_, qos) in self._inflight.items() if qos == 0]:
                    del self._inflight[mid]
        for (entry_id, _), reason in done:
            if getattr(reason, "is_failure", False):
                _log.error("the broker refused outbox message %d (%s): dropped", entry_id, reason)
            self.store.outbox_ack(entry_id)

    def _publish(self) -> None:
        import paho.mqtt.client as paho

        with self._lock:
            busy = {entry_id for entry_id, _ in self._inflight.values()}
            client = self._client
        room = self.window - len(busy)
        if room <= 0 or client is None:
            return
        for entry in self.store.outbox_pending(limit=len(busy) + room):
            if entry.id in busy:
                continue
            message = entry.message
            info = client.publish(message.topic, message.payload, message.qos, message.retain,
                                  properties=self._properties(message.correlation_data))
            if info.rc == paho.MQTT_ERR_SUCCESS or (message.qos > 0 and info.rc == paho.MQTT_ERR_NO_CONN):
                with self._lock:  # a QoS 1 message queued while disconnected is sent by paho on reconnection
                    self._inflight[info.mid] = (entry.id, message.qos)
            else:
                return  # not connected (QoS 0) or paho's queue is full: again at the next wake

    def _properties(self, correlation_data: Optional[bytes]) -> Any:
        """MQTT 5 correlation data of a reply copy (none over 3.1.1, where replies cannot be asked for)."""
        if correlation_data is None or not self._version5:
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = correlation_data
        return properties
