"""`edge-agent run`: the service. Wires the broker link, the intake, the lanes and the store.

Threads: paho's network thread and the outbox pump (agent.mqtt.link), the quick lane and the job
lane (agent.service.lanes), and this main loop, which takes every command in (agent.service.intake)
and then acknowledges it to the broker, publishes telemetry, pings the systemd watchdog and handles
signals. Start-up: open the store, report jobs a crash left running as `interrupted`, carry out
leftover cancels, connect, start the lanes (queued jobs resume, each in the job process,
agent.service.job_process), and send READY=1 once the broker
answered (or after READY_TIMEOUT_S, so a broker outage at boot does not fail the unit; results queue
in the store meanwhile). SIGTERM: stop taking commands, let the running job finish within
`jobs.stop_grace_s` (else it goes back to the queue), publish `offline`, flush the outbox for a few
seconds, disconnect. SIGHUP: reload the configuration (see `Daemon.reload`).
"""

from __future__ import annotations

import logging
import platform
import queue
import signal
import time
from typing import Any, Dict, List, Optional

from agent import __version__
from agent.config import Config, load
from agent.device.detect import detect_device
from agent.errors import ConfigError
from agent.mqtt.link import Inbound, Link
from agent.mqtt.outbox import OutboxMessage
from agent.mqtt.protocol import Command, Limits, Status, Topics, encode
from agent.notify import Notifier
from agent.service.handlers import Handlers
from agent.service.intake import Intake
from agent.service.job_process import kill_stale
from agent.service.lanes import JOBS, QUICK, Lane
from agent.service.model_store import remove_leftovers
from agent.service.readings import Readings
from agent.service.replies import Outcome, Replies
from agent.service.store import Job, Store

_log = logging.getLogger(__name__)
READY_TIMEOUT_S = 30.0  # under the unit's TimeoutStartSec=60
FLUSH_S = 5.0  # how long a clean stop waits for the outbox to drain
IDLE_TICK_S = 5.0  # the main loop's longest sleep: commands and signals wake it at once
FORGET_EVERY_S = 3600.0  # how often the idempotency window is applied while running
_INTERRUPTED = Outcome("interrupted", code="interrupted",
                       message="the agent stopped (crash, kill or power cut) while this job ran")


class Daemon:
    """One agent process; `run()` returns the exit code once a SIGTERM/SIGINT has been handled."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.inbox = queue.SimpleQueue()  # type: ignore[var-annotated]  # reentrant: signal handlers put too
        self.notifier = Notifier()
        self.topics = Topics(config.device.id, config.device.groups, config.mqtt.root)
        self.replies = Replies(self.topics)
        self.store = Store(config.database, config.outbox.max_messages, config.outbox.max_bytes,
                           config.jobs.max_rejected_ids)
        self.readings = Readings()
        self.platform = self._platform()
        self._stop = False
        self._reload = False
        self.handlers = Handlers()
        handlers = self.handlers.table()
        quick = {name: handlers[name] for name in ("ping", "info", "models")}
        heavy = {name: handler for name, handler in handlers.items() if name not in quick}
        self.quick = Lane("quick", QUICK, self.store, self.replies, quick, self.settings, self.outbox_changed)
        self.jobs = Lane("jobs", JOBS, self.store, self.replies, heavy, self.settings, self.outbox_changed)
        self.intake = Intake(self.store, self.replies, (self.quick, self.jobs), self.limits,
                             lambda: self.config.jobs.queue_limit, self.outbox_changed)
        self.link: Optional[Link] = None

    def settings(self) -> Config:
        """The configuration now (a job reads it when it starts)."""
        return self.config

    def limits(self) -> Limits:
        """What a command may ask for, from the configuration now."""
        config = self.config
        return Limits(max_payload_bytes=config.mqtt.max_payload_bytes, max_deploy_bytes=config.deploy.max_bytes,
                      deploy_hosts=config.deploy.hosts, http_hosts=config.deploy.http_hosts)

    def outbox_changed(self) -> None:
        """Something was written to the outbox: wake the pump."""
        if self.link is not None:
            self.link.wake()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop cleanly."""
        for number, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                (signal.SIGHUP, self._on_reload)):
            signal.signal(number, handler)
        self._start()
        try:
            self._serve()
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        if kill_stale(self.config.storage.state_dir):
            _log.warning("killed a job process left running by the agent before it stopped")
        remove_leftovers(self.config.model_dir)
        self._forget()
        interrupted = self.store.interrupt_unfinished(self._announce_interrupted)
        for job in interrupted:
            _log.warning("job %s (%s) was running when the agent stopped: reported interrupted", job.id, job.cmd)
        self.intake.run_cancels()
        self.link = self._new_link()
        self.link.start()
        self.quick.start()
        self.jobs.start()
        self.notifier.status("connecting to the broker")

    def _announce_interrupted(self, job: Job) -> List[OutboxMessage]:
        return self.replies.end(Command.from_record(job.command), _INTERRUPTED)

    def _new_link(self) -> Link:
        mqtt = self.config.mqtt
        return Link(mqtt, self.topics, self.store, mqtt.username or self.config.device.id, self.inbox.put,
                    self._status_payload)

    def _status_payload(self, state: str) -> bytes:
        return encode(Status(self.topics.device_id, state, __version__, list(self.topics.groups), self.platform))

    @staticmethod
    def _platform() -> Dict[str, Any]:
        try:
            summary = detect_device().summary
        except OSError:
            summary = None
        return {"summary": summary, "machine": platform.machine(), "python": platform.python_version()}

    def _serve(self) -> None:
        ready = False
        started = time.monotonic()
        next_watchdog = next_telemetry = started
        next_forget = started + FORGET_EVERY_S
        while not self._stop:
            now = time.monotonic()
            interval = self.config.telemetry.interval_s
            deadlines = [next_watchdog if self.notifier.watchdog_s else now + IDLE_TICK_S,
                         next_telemetry if interval else now + IDLE_TICK_S, now + (0.1 if not ready else IDLE_TICK_S)]
            try:
                item = self.inbox.get(timeout=max(0.0, min(deadlines) - now))
            except queue.Empty:
                item = None
            if isinstance(item, Inbound):
                self._take(item)
            if self._reload:
                self._reload = False
                self.reload()
            now = time.monotonic()
            assert self.link is not None
            if not ready and (self.link.connected.is_set() or now - started > READY_TIMEOUT_S):
                ready = True
                self.notifier.ready("connected" if self.link.connected.is_set() else "waiting for the broker")
            if self.notifier.watchdog_s and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + self.notifier.watchdog_s / 3
            if interval and now >= next_telemetry:
                next_telemetry = now + interval
                self._publish_telemetry()
            if now >= next_forget:
                next_forget = now + FORGET_EVERY_S
                self._forget()

    def _forget(self) -> None:
        """Drop finished jobs and command ids older than the idempotency window."""
        self.store.forget_before(time.time() - self.config.jobs.remember_days * 86400)

    def _take(self, inbound: Inbound) -> None:
        try:
            self.intake.take(inbound.payload, inbound.response_topic, inbound.correlation_data)
        except Exception:  # e.g. a full disk: not acknowledged, so the broker delivers it again later
            _log.exception("a command on %s could not be recorded; it stays unacknowledged", inbound.topic)
            return
        assert self.link is not None
        self.link.ack(inbound)

    def _publish_telemetry(self) -> None:
        try:
            readings = self.readings.read()
        except OSError as error:
            readings = {"error": str(error)}
        self.store.outbox_put_all(self.replies.telemetry(readings, self.jobs.current))
        self.outbox_changed()

    def _on_stop(self, number: int, frame: Any) -> None:
        self._stop = True
        self.inbox.put(None)

    def _on_reload(self, number: int, frame: Any) -> None:
        self._reload = True
        self.inbox.put(None)

    def reload(self) -> None:
        """SIGHUP: read the configuration again. Limits, telemetry, queue and deploy settings apply at
        once (a job reads them when it starts), broker settings reconnect the link; the device id,
        groups, topic root, storage and outbox caps take effect at the next start."""
        self.notifier.reloading()
        try:
            new = load(self.config.source, profile=self.config.profile)
        except ConfigError as error:
            _log.error("configuration not reloaded, the old one stays: %s", error)
            self.notifier.ready("configuration reload failed")
            return
        fixed = [name for name in ("device", "storage", "outbox") if getattr(new, name) != getattr(self.config, name)]
        if new.mqtt.root != self.config.mqtt.root:
            fixed.append("mqtt.root")
        if fixed:
            _log.warning("changed settings that apply at the next start: %s", ", ".join(fixed))
        old = self.config
        self.config = new
        if new.mqtt != old.mqtt and self.link is not None:
            _log.info("broker settings changed: reconnecting")
            self.link.stop(flush_s=0)
            self.link = self._new_link()
            self.link.start()
        _log.info("configuration reloaded from %s", new.source)
        self.notifier.ready("configuration reloaded")

    def _shutdown(self) -> None:
        self.notifier.stopping()
        _log.info("stopping: the running job gets %g s to finish", self.config.jobs.stop_grace_s)
        self.quick.stop(self.config.jobs.stop_grace_s)
        self.jobs.stop(self.config.jobs.stop_grace_s)
        if self.link is not None:
            self.link.stop(FLUSH_S)
        self.store.close()
        _log.info("stopped")
