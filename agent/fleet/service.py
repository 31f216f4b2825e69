"""`edge-agent coordinator`: the fleet's long-running service (docs/coordinator.md, "The service").

It subscribes (QoS 1, a persistent session, its own broker account) to every board's status, telemetry,
events and results (as `$share/<group>/...` when several coordinators share the work, `[cluster]`), and
hands the messages waiting, in order, to `ingest_batch`: up to `database.batch_max` of them in one
transaction. A message is acknowledged to the broker only after its transaction committed: while the
database is unreachable the messages wait and are tried again, and a coordinator stopped meanwhile gets
them again from the broker's session when it is back, so a database outage or a restart loses nothing.
What ingest returns is then carried out: fleet-job commands owed to a board that came back online, and
regression alerts published on `<root>/coordinator/alerts`. Fleet jobs made through the HTTP API
(`dispatch`) are published to each board's own command topic. The HTTP API (agent/fleet/api.py) and the
dashboard (agent/fleet/dashboard/) are served by uvicorn on a thread; the main loop expires job deadlines
and keeps the systemd watchdog fed.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

import uvicorn
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agent.errors import StoreError
from agent.fleet import jobs
from agent.fleet.api import make_app
from agent.fleet.dashboard.pages import add_dashboard
from agent.fleet.ingest import IngestSettings, Outcome, Retention, ingest_batch
from agent.fleet.metrics import CoordinatorMetrics
from agent.fleet.sessions import Sessions, session_key
from agent.fleet.settings import CoordinatorConfig
from agent.fleet.store.database import Store, open_store
from agent.mqtt.link import Backoff, connect_properties, make_client
from agent.mqtt.messages import utc_now
from agent.notify import Notifier

_log = logging.getLogger(__name__)

TICK_S = 0.5  # the main loop's longest wait: job deadlines and the watchdog are checked this often
SUBSCRIBED_KINDS = ("status", "telemetry", "events", "results")
ALERT_SCHEMA = "edge-agent/alert/1"


@dataclass(frozen=True)
class Received:
    """A board's message as the broker delivered it; acknowledged once ingest committed it."""

    topic: str
    payload: bytes
    mid: int
    qos: int


def subscriptions(config: CoordinatorConfig) -> List[str]:
    """The topic filters the coordinator subscribes to: every board's messages, shared with the other
    coordinators of `cluster.share_group` when one is set (MQTT 5: each message goes to one of them)."""
    share = config.cluster.share_group
    prefix = f"$share/{share}/" if share else ""
    return [f"{prefix}{config.mqtt.root}/+/{kind}" for kind in SUBSCRIBED_KINDS]


def client_id(config: CoordinatorConfig) -> str:
    """The coordinator's client id: its account and its instance name (the hostname unless set), so that
    coordinators sharing one account keep their own persistent sessions."""
    instance = config.cluster.instance or socket.gethostname()
    return f"edge-coordinator-{config.mqtt.username or 'anonymous'}-{instance}"[:64]


def conflicted(error: Exception) -> bool:
    """Whether a failed transaction met another coordinator's on the same rows (a unique key both inserted, a
    deadlock, a serialization failure): tried again, not counted as an outage."""
    return isinstance(error, IntegrityError) or getattr(getattr(error, "orig", None), "sqlstate", None) in (
        "40001", "40P01")


def error_line(error: Exception) -> str:
    """The first line of a database error's own message."""
    return (str(getattr(error, "orig", None) or error).splitlines() or [""])[0]


def alerts_topic(root: str) -> str:
    """Where the coordinator publishes regression alerts (no board may publish there: `coordinator` is an
    operator's name, never a device id)."""
    return f"{root}/coordinator/alerts"


def ingest_settings(config: CoordinatorConfig) -> IngestSettings:
    """Ingest's settings from the coordinator's [mqtt] and [database] sections."""
    database = config.database
    return IngestSettings(root=config.mqtt.root, max_payload_bytes=database.max_payload_bytes,
                          retention=Retention(database.telemetry_max_age_s or None,
                                              database.telemetry_max_count or None),
                          regressions=config.regressions)


class CoordinatorService:
    """The coordinator: a broker link into ingest, the HTTP API, fleet jobs; `run` until SIGTERM."""

    def __init__(self, config: CoordinatorConfig, notifier: Optional[Notifier] = None) -> None:
        """Open the store (a `StoreError` if it cannot be opened) and prepare the broker link."""
        self.config = config
        self.settings = ingest_settings(config)
        self.notifier = notifier or Notifier()
        self.store: Store = open_store(config.database.url, config.database.sqlite_busy_timeout_s)
        self.inbox = queue.Queue()  # type: queue.Queue[Received]
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.version5 = config.mqtt.protocol != "3.1.1"
        self.api_address: Optional[Tuple[str, int]] = None
        self._metrics: Any = None
        self._server: Any = None
        self._client: Any = None
        self._outage_since: Optional[float] = None
        self._in_hand = 0  # the batch being stored

    # start and stop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 on a clean stop."""
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.stopping.set())
        self.start()
        try:
            self.loop()
        finally:
            self.stop()
        return 0

    def start(self) -> None:
        """Connect to the broker (in the background: it may be down), serve the API, tell systemd READY."""
        self._metrics = CoordinatorMetrics(self.store)
        self._metrics.waiting(self.waiting)
        self._client = self._new_client()
        self._serve_api()
        host, port = self.api_address or ("-", 0)
        _log.info("coordinator ready: database %s, API http://%s:%d/", self.store.engine.url.render_as_string(
            hide_password=True), host, port)
        self.notifier.ready(f"API on {host}:{port}")

    def stop(self) -> None:
        """Stop the API and the broker link; unacknowledged messages stay with the broker's session."""
        self.notifier.stopping()
        self.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
            self._api_thread.join(timeout=10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self.store.close()

    def _serve_api(self) -> None:
        api, dashboard = self.config.api, self.config.dashboard
        sessions = Sessions(api.tokens, session_key(dashboard.secret_file), dashboard.session_hours * 3600)
        app = make_app(self.store, api, dispatch=self.dispatch, metrics=self._metrics,
                       sessions=sessions if dashboard.enabled else None)
        if dashboard.enabled:
            add_dashboard(app, self.store, sessions, self.dispatch, dashboard.secure_cookie)
        self._server = uvicorn.Server(uvicorn.Config(app, host=api.host, port=api.port, log_level="warning",
                                                     access_log=False, lifespan="off", timeout_graceful_shutdown=2))
        self._api_thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._api_thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._api_thread.is_alive() or time.monotonic() > deadline:
                raise StoreError(f"the HTTP API could not listen on {api.host}:{api.port} (in use?)")
            time.sleep(0.02)
        self.api_address = self._server.servers[0].sockets[0].getsockname()[:2]

    # the broker link (paho's network thread: record and return) -----------------------------------

    def _new_client(self) -> Any:
        mqtt = self.config.mqtt
        client = make_client(mqtt, client_id(self.config), mqtt.username, self.version5, manual_ack=True,
                             persistent=True)
        client.max_inflight_messages_set(mqtt.inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(mqtt.reconnect_min_s, mqtt.reconnect_max_s)
        client.connect_async(mqtt.host, mqtt.port, mqtt.keepalive_s, clean_start=False,
                             properties=connect_properties(self.version5, mqtt.session_expiry_s))
        client.loop_start()
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            _log.error("the broker refused the coordinator's connection: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in subscriptions(self.config)])
        _log.info("connected to the broker at %s:%d", self.config.mqtt.host, self.config.mqtt.port)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected.is_set() and not self.stopping.is_set():
            _log.warning("lost the broker connection: %s", reason)
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.inbox.put(Received(message.topic, bytes(message.payload), message.mid, message.qos))

    # the main loop --------------------------------------------------------------------------------

    def loop(self) -> None:
        """Ingest messages in order, expire job deadlines, feed the watchdog, until stopping."""
        next_watchdog = next_expiry = 0.0
        while not self.stopping.is_set():
            batch = self._waiting()
            if batch:
                self.take(batch)
            now = time.monotonic()
            if now >= next_expiry:
                next_expiry = now + 1.0
                self._guarded(lambda: jobs.expire(self.store, datetime.now(timezone.utc)))
            if self.notifier.watchdog_s and now >= next_watchdog:
                next_watchdog = now + self.notifier.watchdog_s / 3
                self.notifier.watchdog()

    def _waiting(self) -> List[Received]:
        """The messages waiting, oldest first, at most `batch_max` (waiting up to a tick for the first)."""
        try:
            batch = [self.inbox.get(timeout=TICK_S)]
        except queue.Empty:
            return []
        while len(batch) < self.config.database.batch_max:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def take(self, batch: Sequence[Received]) -> None:
        """Ingest messages in one transaction, retrying while the database is down; then acknowledge each and
        carry out what it asked for. Messages still unstored when the service stops are not acknowledged."""
        backoff = Backoff(0.2, self.config.database.retry_max_s)
        messages = [(received.topic, received.payload) for received in batch]
        self._in_hand = len(batch)
        while True:
            outcomes = self._guarded(lambda: ingest_batch(self.store, messages, self.settings))
            if outcomes is not None or self.stopping.is_set():
                break
            if self.notifier.watchdog_s:
                self.notifier.watchdog()
            self.stopping.wait(backoff.next())
        self._in_hand = 0
        if outcomes is None:
            return
        for received, outcome in zip(batch, outcomes):
            self._client.ack(received.mid, received.qos)
            self._metrics.ingested(outcome.outcome)
            self._carry_out(outcome)

    def _guarded(self, work: Any) -> Any:
        """`work()`, or None while the database is unreachable (said once per outage, and when it ends: in the
        log, in the metrics and as a `database_outage` alert on MQTT)."""
        try:
            value = work()
        except (SQLAlchemyError, StoreError) as error:
            if conflicted(error):
                _log.warning("a transaction met another coordinator's (%s); trying it again", error_line(error))
                return None
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                reason = error_line(error)
                _log.error("the database is unavailable (%s); messages wait and are tried again", reason)
                self._metrics.database_down()
                self._outage_alert("open", f"the database is unavailable ({reason[:200]}); messages wait "
                                           "unacknowledged and are tried again")
            return None
        if self._outage_since is not None:
            seconds = time.monotonic() - self._outage_since
            _log.warning("the database is back after %.1f s", seconds)
            self._metrics.database_back(seconds)
            self._outage_alert("resolved", f"the database is back after {seconds:.1f} s; nothing was lost",
                               seconds)
            self._outage_since = None
        return value

    def _outage_alert(self, state: str, message: str, seconds: Optional[float] = None) -> None:
        """Publish a `database_outage` alert (`open` when it starts, `resolved` when it ends)."""
        document = {"schema": ALERT_SCHEMA, "ts": utc_now(), "kind": "database_outage", "state": state,
                    "coordinator": client_id(self.config), "waiting": self.waiting(), "duration_s": seconds,
                    "message": message}
        self._client.publish(alerts_topic(self.config.mqtt.root), json.dumps(document), qos=1)

    def waiting(self) -> int:
        """Messages received and not yet stored (so not acknowledged)."""
        return self.inbox.qsize() + self._in_hand

    def _carry_out(self, outcome: Outcome) -> None:
        """Publish what a message made due: commands for a board back online, regression alerts."""
        self._publish_sends(outcome.sends)
        for alert in outcome.alerts:
            document = {"schema": ALERT_SCHEMA, "ts": utc_now(), **alert.to_dict()}
            self._client.publish(alerts_topic(self.config.mqtt.root), json.dumps(document), qos=1)
            _log.warning("alert: %s on %s", alert.message, alert.device_id)

    def _publish_sends(self, sends: Sequence[jobs.Send]) -> None:
        for send in sends:
            self._client.publish(send.topic, send.payload, qos=1)

    # fleet jobs from the API ----------------------------------------------------------------------

    def dispatch(self, target: str, cmd: str, args: Dict[str, Any], created_by: str) -> jobs.JobView:
        """Make a fleet job and publish its command to each online board of the target (`JobError` when
        the command or the target is bad)."""
        view, sends = jobs.create_job(self.store, target, cmd, args, self.config.jobs, self.config.mqtt.root,
                                      datetime.now(timezone.utc), created_by)
        self._publish_sends(sends)
        _log.info("fleet job %s: %s to %s (%d boards)", view.id, cmd, target, len(view.boards))
        return view
