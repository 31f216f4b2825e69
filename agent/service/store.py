"""The agent's durable state: one SQLite file (WAL) holding jobs, seen command ids and the outbox.

Every method commits before it returns, with `synchronous=FULL`: in WAL mode that fsyncs the log on
each commit, so a write that returned survives a power cut, not only a crash of the process
(`NORMAL` would keep the file consistent but could lose the last commits on power loss — a result
the dashboard never gets). The cost is one fsync per write, a few per job. A state change and the
messages announcing it are written in one transaction (`publish=`), so a crash can never leave a
finished job whose result is not queued for sending. One connection guarded by a lock serves the
MQTT network thread and the main loop alike. Outbox cap policy: see `Store`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

from agent.errors import StoreError
from agent.mqtt.outbox import OutboxEntry, OutboxMessage

JOB_STATES = ("queued", "running", "done", "failed", "interrupted", "cancelled")
FINAL_STATES = ("done", "failed", "interrupted", "cancelled")
OUTBOX_KINDS = ("result", "event", "status", "telemetry")
DROP_ORDER = ("telemetry", "event")  # what goes first when the outbox is over its cap; never results
SCHEMA_VERSION = 1
_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    cmd TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'interrupted', 'cancelled')),
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, seq);
CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, outcome TEXT NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('result', 'event', 'status', 'telemetry')),
    correlation BLOB,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
"""


@dataclass(frozen=True)
class Job:
    """A job as stored: `command` and `result` are JSON text, times are Unix seconds."""

    id: str
    cmd: str
    command: str
    state: str
    priority: int
    created: float
    updated: float
    started: Optional[float]
    result: Optional[str]


Announce = Callable[[Job], Sequence[OutboxMessage]]
_JOB_COLUMNS = "id, cmd, command, state, priority, created, updated, started, result"


class Store:
    """Jobs, seen command ids and the outbox in `path` (an SQLite file, created with its folder).

    Outbox cap: when the outbox holds more than `max_outbox_messages` messages or
    `max_outbox_bytes` payload bytes, the oldest telemetry is dropped first, then the oldest events;
    results are never dropped (the outbox may then stay over its cap), and a new status replaces any
    unsent older status on the same topic, since only the newest retained status matters.

    Ids answered without a job (rejected commands) are kept for their age limit and, at most,
    `max_rejected_ids` of them: a flood of bad commands cannot grow the file without bound; the oldest
    are forgotten first (a resent one is then judged again, which gives the same answer).
    """

    def __init__(self, path: Union[str, Path], max_outbox_messages: int = 10_000,
                 max_outbox_bytes: int = 32 * 1024 * 1024, max_rejected_ids: int = 5_000) -> None:
        self.path = Path(path)
        self._max_messages = max_outbox_messages
        self._max_bytes = max_outbox_bytes
        self._max_rejected = max_rejected_ids
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None,
                                       check_same_thread=False)
            self._open()
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the state database {self.path}: {error}") from None

    def _open(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal mode is {mode!r}, WAL is needed")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this edge-agent's "
                                        f"{SCHEMA_VERSION}")
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database (checkpointing the WAL); the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Commands and jobs ------------------------------------------------------------------------

    def record_command(self, command_id: str, outcome: str,
                       publish: Sequence[OutboxMessage] = ()) -> Optional[str]:
        """Remember a command id answered without a job (e.g. rejected), queueing `publish`.
        Returns the stored outcome instead, writing nothing, when the id was seen before."""
        with self._transaction() as db:
            earlier = self._remember(db, command_id, outcome, publish)
            if earlier is None:
                self._cap_rejected(db)
            return earlier

    def _cap_rejected(self, db: sqlite3.Connection) -> None:
        """Forget the oldest ids without a job once they exceed the cap by a tenth (so the trim runs once
        every `cap / 10` rejections, not at each)."""
        count = db.execute("SELECT COUNT(*) FROM commands WHERE id NOT IN (SELECT id FROM jobs)").fetchone()[0]
        if count > self._max_rejected + self._max_rejected // 10:
            db.execute("DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE id NOT IN "
                       "(SELECT id FROM jobs) ORDER BY received, rowid LIMIT ?)", (count - self._max_rejected,))

    def add_job(self, job_id: str, cmd: str, command: str, priority: int, outcome: str = "accepted",
                publish: Sequence[OutboxMessage] = ()) -> Optional[str]:
        """Queue a job under its command id, remember the id and queue `publish`, all at once.
        Returns the earlier outcome instead, queueing nothing, when the id was seen before."""
        with self._transaction() as db:
            earlier = self._remember(db, job_id, outcome, publish)
            if earlier is None:
                now = time.time()
                db.execute("INSERT INTO jobs (id, cmd, command, state, priority, created, updated) "
                           "VALUES (?, ?, ?, 'queued', ?, ?, ?)", (job_id, cmd, command, priority, now, now))
            return earlier

    def _remember(self, db: sqlite3.Connection, command_id: str, outcome: str,
                  publish: Sequence[OutboxMessage]) -> Optional[str]:
        row = db.execute("SELECT outcome FROM commands WHERE id = ?", (command_id,)).fetchone()
        if row is not None:
            return str(row[0])
        db.execute("INSERT INTO commands (id, outcome, received) VALUES (?, ?, ?)",
                   (command_id, outcome, time.time()))
        self._put(db, publish)
        return None

    def outcome(self, command_id: str) -> Optional[str]:
        """The outcome remembered for a command id, or None when it was never seen (or forgotten)."""
        with self._lock:
            row = self._db.execute("SELECT outcome FROM commands WHERE id = ?", (command_id,)).fetchone()
        return None if row is None else str(row[0])

    def next_job(self, lowest: int = 0, highest: Optional[int] = None) -> Optional[Job]:
        """Claim the next queued job whose priority is in [lowest, highest], lowest priority number
        first, then oldest: it becomes running. The range lets separate lanes share one queue."""
        with self._transaction() as db:
            row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND priority BETWEEN ? AND ? "
                             "ORDER BY priority, seq LIMIT 1",
                             (lowest, (1 << 62) if highest is None else highest)).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE jobs SET state = 'running', started = ?, updated = ? WHERE id = ?",
                       (now, now, row[0]))
            return self._job(db, row[0])

    def set_state(self, job_id: str, state: str, publish: Sequence[OutboxMessage] = ()) -> bool:
        """Move an unfinished job to `state`, queueing `publish`; False (and nothing written) when the
        job had already finished. Raises KeyError for an unknown job."""
        return self._update(job_id, state, None, publish)

    def finish(self, job_id: str, state: str, result: Optional[str],
               publish: Sequence[OutboxMessage] = ()) -> bool:
        """End an unfinished job in a final state with its result JSON, queueing `publish` (the
        result message) in the same commit; False when it had already finished."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final job state")
        return self._update(job_id, state, result, publish)

    def _update(self, job_id: str, state: str, result: Optional[str],
                publish: Sequence[OutboxMessage]) -> bool:
        if state not in JOB_STATES:
            raise ValueError(f"{state!r} is not a job state")
        with self._transaction() as db:
            job = self._job(db, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state in FINAL_STATES:
                return False
            db.execute("UPDATE jobs SET state = ?, result = COALESCE(?, result), updated = ? WHERE id = ?",
                       (state, result, time.time(), job_id))
            self._put(db, publish)
            return True

    def interrupt_unfinished(self, announce: Optional[Announce] = None) -> List[Job]:
        """At start-up: mark every job left running by a crash `interrupted` and return them; the
        messages `announce(job)` returns are queued in the same commit, and the payload of its
        `result` message, if any, is kept as the job's result. Queued jobs stay queued."""
        with self._transaction() as db:
            now = time.time()
            rows = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
            jobs = []
            for row in rows:
                job = replace(Job(*row), state="interrupted", updated=now)
                messages = announce(job) if announce else ()
                result = next((m.payload.decode("utf-8") for m in messages if m.kind == "result"), job.result)
                db.execute("UPDATE jobs SET state = 'interrupted', result = ?, updated = ? WHERE id = ?",
                           (result, now, job.id))
                self._put(db, messages)
                jobs.append(replace(job, result=result))
            return jobs

    def job(self, job_id: str) -> Optional[Job]:
        """The stored job with this id, or None."""
        with self._lock:
            return self._job(self._db, job_id)

    def _job(self, db: sqlite3.Connection, job_id: str) -> Optional[Job]:
        row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job(*row)

    def count_jobs(self, *states: str) -> int:
        """How many jobs are in any of `states` (e.g. to bound the queue)."""
        marks = ", ".join("?" * len(states))
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})",
                                        states).fetchone()[0])

    def forget_before(self, timestamp: float) -> int:
        """Delete finished jobs and remembered command ids older than `timestamp` (the idempotency
        window); returns how many rows went."""
        finals = ", ".join("?" * len(FINAL_STATES))
        with self._transaction() as db:
            jobs = db.execute(f"DELETE FROM jobs WHERE state IN ({finals}) AND updated < ?",
                              (*FINAL_STATES, timestamp)).rowcount
            commands = db.execute("DELETE FROM commands WHERE received < ? AND id NOT IN "
                                  "(SELECT id FROM jobs)", (timestamp,)).rowcount
            return int(jobs + commands)

    # Outbox -----------------------------------------------------------------------------------

    def outbox_put(self, message: OutboxMessage) -> int:
        """Queue one message for publishing (applying the cap policy); returns its outbox id."""
        return self.outbox_put_all([message])[0]

    def outbox_put_all(self, messages: Sequence[OutboxMessage]) -> List[int]:
        """Queue messages in one transaction, in order (applying the cap policy); returns their ids."""
        with self._transaction() as db:
            return self._put(db, messages)

    def _put(self, db: sqlite3.Connection, messages: Sequence[OutboxMessage]) -> List[int]:
        ids = []
        for message in messages:
            if message.kind not in OUTBOX_KINDS:
                raise ValueError(f"{message.kind!r} is not an outbox kind")
            if message.kind == "status":
                db.execute("DELETE FROM outbox WHERE kind = 'status' AND topic = ?", (message.topic,))
            cursor = db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, kind, correlation, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.topic, bytes(message.payload), message.qos, int(message.retain), message.kind,
                 message.correlation_data, time.time()))
            assert cursor.lastrowid is not None  # an INSERT always sets it
            ids.append(cursor.lastrowid)
        if messages:
            self._enforce_cap(db)
        return ids

    def _enforce_cap(self, db: sqlite3.Connection) -> None:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        for kind in DROP_ORDER:
            victims = []
            rows = db.execute("SELECT id, LENGTH(payload) FROM outbox WHERE kind = ? ORDER BY id", (kind,))
            while count > self._max_messages or size > self._max_bytes:
                row = rows.fetchone()
                if row is None:
                    break
                victims.append((row[0],))
                count, size = count - 1, size - row[1]
            rows.close()
            if victims:
                db.executemany("DELETE FROM outbox WHERE id = ?", victims)
                _log.warning("outbox over its cap: dropped the %d oldest %s message(s)", len(victims), kind)

    def outbox_pending(self, limit: int = 100) -> List[OutboxEntry]:
        """Up to `limit` unacknowledged messages, oldest first (the order they were queued in)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload, qos, retain, kind, correlation, created "
                                    "FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [OutboxEntry(row[0], OutboxMessage(row[1], bytes(row[2]), row[3], bool(row[4]), row[5],
                                                  None if row[6] is None else bytes(row[6])), row[7])
                for row in rows]

    def outbox_ack(self, entry_id: int) -> None:
        """Delete a message the broker acknowledged (PUBACK; for QoS 0, once it was written out)."""
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

    def outbox_size(self) -> Tuple[int, int]:
        """(messages, payload bytes) waiting in the outbox."""
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        return int(count), int(size)
