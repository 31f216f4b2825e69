"""The durable store: real SQLite files, reopened after writes and after a SIGKILLed writer."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

from agent.errors import AgentError, StoreError
from agent.mqtt.outbox import OutboxMessage
from agent.service.store import Job, Store


def message(kind: str, payload: bytes = b"{}", topic: str = "edge/d/x") -> OutboxMessage:
    return OutboxMessage(topic, payload, 0 if kind == "telemetry" else 1, kind == "status", kind)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state" / "agent.db") as opened:
        yield opened


def test_database_is_wal_with_full_sync(store: Store) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.path.parent.stat().st_mode & 0o077 == 0


def test_jobs_run_by_priority_then_age(store: Store) -> None:
    for job_id, priority in [("bench-1", 10), ("bench-2", 10), ("info-1", 1), ("cancel-1", 0), ("bench-3", 10)]:
        assert store.add_job(job_id, job_id.split("-")[0], "{}", priority) is None
    order = []
    while True:
        job = store.next_job()
        if job is None:
            break
        assert job.state == "running" and job.started is not None
        order.append(job.id)
    assert order == ["cancel-1", "info-1", "bench-1", "bench-2", "bench-3"]


def test_a_seen_command_id_returns_its_stored_outcome(store: Store) -> None:
    accepted = message("event", b'{"event":"accepted"}')
    assert store.add_job("c1", "bench", '{"cmd":"bench"}', 10, "accepted", publish=[accepted]) is None
    assert store.add_job("c1", "bench", '{"cmd":"bench"}', 10, "accepted", publish=[accepted]) == "accepted"
    assert store.record_command("c1", "rejected") == "accepted"
    assert store.record_command("bad-1", "rejected:unknown_command") is None
    assert store.record_command("bad-1", "rejected:other") == "rejected:unknown_command"
    assert store.add_job("bad-1", "bench", "{}", 10) == "rejected:unknown_command"
    assert store.count_jobs("queued") == 1
    assert store.outbox_size()[0] == 1  # the duplicate queued neither a job nor a message


def test_finish_stores_result_and_queues_its_message_together(store: Store) -> None:
    store.add_job("c1", "bench", "{}", 10)
    job = store.next_job()
    assert job is not None
    result = message("result", b'{"status":"done"}', "edge/d/results")
    assert store.finish(job.id, "done", '{"p50_ms": 1.2}', publish=[result])
    stored = store.job("c1")
    assert stored is not None and (stored.state, stored.result) == ("done", '{"p50_ms": 1.2}')
    assert [entry.message for entry in store.outbox_pending()] == [result]
    assert not store.finish("c1", "failed", "{}", publish=[result])  # already final: nothing written
    assert not store.set_state("c1", "cancelled")
    assert store.job("c1").state == "done" and store.outbox_size()[0] == 1
    with pytest.raises(KeyError):
        store.set_state("nope", "cancelled")
    with pytest.raises(ValueError):
        store.finish("c1", "running", None)


def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    store.add_job("c1", "bench", "{}", 10)
    with pytest.raises(ValueError):
        store.set_state("c1", "cancelled", publish=[message("event"), message("bogus-kind")])
    assert store.job("c1").state == "queued" and store.outbox_size() == (0, 0)


def test_outbox_is_first_in_first_out_and_ack_deletes(store: Store) -> None:
    ids = [store.outbox_put(message("event", str(n).encode())) for n in range(5)]
    pending = store.outbox_pending(limit=3)
    assert [entry.id for entry in pending] == ids[:3]
    assert [entry.message.payload for entry in pending] == [b"0", b"1", b"2"]
    store.outbox_ack(ids[1])
    assert [entry.id for entry in store.outbox_pending()] == [ids[0], *ids[2:]]
    store.outbox_ack(ids[1])  # acknowledging twice is harmless


def test_outbox_keeps_reply_properties(store: Store) -> None:
    reply = OutboxMessage("edge/d/reply/ui", b"{}", 1, False, "result", correlation_data=b"\x00k")
    store.outbox_put(reply)
    assert store.outbox_pending()[0].message == reply


def test_cap_drops_oldest_telemetry_then_events_never_results(tmp_path: Path) -> None:
    with Store(tmp_path / "agent.db", max_outbox_messages=6) as capped:
        capped.outbox_put(message("result", b"r1"))
        capped.outbox_put(message("event", b"e1"))
        for n in range(3):
            capped.outbox_put(message("telemetry", b"t%d" % n))
        capped.outbox_put(message("event", b"e2"))
        capped.outbox_put(message("telemetry", b"t3"))  # 7 > 6: the oldest telemetry goes
        assert [e.message.payload for e in capped.outbox_pending()] == [b"r1", b"e1", b"t1", b"t2", b"e2", b"t3"]
        for n in range(2, 6):
            capped.outbox_put(message("result", b"r%d" % n))  # all telemetry goes first, then events
        assert [e.message.payload for e in capped.outbox_pending()] == [b"r1", b"e2", b"r2", b"r3", b"r4", b"r5"]
        capped.outbox_put(message("result", b"r6"))
        capped.outbox_put(message("result", b"r7"))  # over the cap, but results are never dropped
        assert [e.message.payload for e in capped.outbox_pending()] == [b"r%d" % n for n in range(1, 8)]


def test_cap_counts_bytes_too(tmp_path: Path) -> None:
    with Store(tmp_path / "agent.db", max_outbox_bytes=1000) as capped:
        capped.outbox_put(message("result", b"r" * 600))
        capped.outbox_put(message("telemetry", b"t" * 300))
        capped.outbox_put(message("event", b"e" * 300))
        assert [e.message.kind for e in capped.outbox_pending()] == ["result", "event"]
        assert capped.outbox_size() == (2, 900)


def test_a_new_status_replaces_an_unsent_one(store: Store) -> None:
    store.outbox_put(message("status", b"offline", "edge/d/status"))
    store.outbox_put(message("event"))
    store.outbox_put(message("status", b"online", "edge/d/status"))
    assert [e.message.payload for e in store.outbox_pending()] == [b"{}", b"online"]


def test_everything_survives_reopening_without_close(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    first = Store(path)  # never closed: as if the process died here
    first.add_job("c1", "bench", '{"x":1}', 10)
    first.add_job("c2", "ping", "{}", 1)
    assert first.next_job().id == "c2"
    first.outbox_put(message("result", b"res"))
    second = Store(path)
    assert second.job("c1").state == "queued" and second.job("c2").state == "running"
    assert [e.message.payload for e in second.outbox_pending()] == [b"res"]
    assert second.record_command("c1", "again") == "accepted"
    second.close()
    first.close()


def test_interrupt_unfinished_marks_running_jobs_and_queues_their_reports(store: Store) -> None:
    store.add_job("c1", "bench", "{}", 10)
    store.add_job("c2", "bench", "{}", 10)
    store.next_job()
    announced: List[Job] = []

    def announce(job: Job) -> List[OutboxMessage]:
        announced.append(job)
        return [message("result", job.id.encode(), "edge/d/results")]

    interrupted = store.interrupt_unfinished(announce)
    assert [(job.id, job.state) for job in interrupted] == [("c1", "interrupted")] == [
        (job.id, job.state) for job in announced]
    assert store.job("c1").state == "interrupted" and store.job("c2").state == "queued"
    assert [e.message.payload for e in store.outbox_pending()] == [b"c1"]
    assert store.interrupt_unfinished(announce) == []


def test_forget_before_drops_old_finished_jobs_and_ids(store: Store) -> None:
    store.add_job("old", "ping", "{}", 1)
    store.finish(store.next_job().id, "done", "{}")
    store.record_command("rejected-old", "rejected")
    store.add_job("waiting", "bench", "{}", 10)
    assert store.forget_before(float("inf")) == 3
    assert store.job("old") is None and store.job("waiting") is not None
    assert store.record_command("old", "accepted") is None


def test_threads_share_one_store(store: Store) -> None:
    def work(thread: int) -> None:
        for n in range(50):
            store.add_job(f"t{thread}-{n}", "ping", "{}", 1, publish=[message("event")])
            store.outbox_put(message("telemetry"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count_jobs("queued") == 200
    assert store.outbox_size()[0] == 400


def test_unusable_database_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "agent.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(StoreError, match="agent.db") as caught:
        Store(garbage)
    assert isinstance(caught.value, AgentError)
    newer = tmp_path / "newer.db"
    connection = sqlite3.connect(str(newer))
    connection.execute("PRAGMA user_version=99")
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        Store(newer)


WRITER = textwrap.dedent("""
    import sys
    from agent.mqtt.outbox import OutboxMessage
    from agent.service.store import Store
    store = Store(sys.argv[1])
    for n in range(100000):
        store.add_job(f"job-{n}", "bench", "{}", 10)
        if n % 3 == 0:
            store.next_job()
        store.outbox_put(OutboxMessage("edge/d/results", b"r%d" % n, 1, False, "result"))
        print(n, flush=True)
""")


def test_every_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    """A real writer process is SIGKILLed mid-stream; every write it reported as done is there."""
    path = tmp_path / "agent.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert writer.stdout is not None
    done = [int(writer.stdout.readline()) for _ in range(60)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    with Store(path) as reopened:
        assert reopened._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for n in done:
            assert reopened.job(f"job-{n}") is not None
        payloads = {entry.message.payload for entry in reopened.outbox_pending(limit=100000)}
        assert {b"r%d" % n for n in done} <= payloads
        interrupted = reopened.interrupt_unfinished()  # each claim took the oldest queued job
        claimed = len([n for n in done if n % 3 == 0])
        assert [job.id for job in interrupted][:claimed] == [f"job-{n}" for n in range(claimed)]
        assert reopened.count_jobs("running") == 0


def test_rejected_ids_are_capped_in_count_oldest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "agent.db", max_rejected_ids=100) as capped:
        capped.add_job("job-1", "bench", "{}", 5)  # ids with a job are never trimmed
        for index in range(1000):
            assert capped.record_command(f"bad-{index:04d}", "rejected:bad_value") is None
        kept = [f"bad-{index:04d}" for index in range(1000) if capped.outcome(f"bad-{index:04d}") is not None]
        assert 100 <= len(kept) <= 110 and kept[-1] == "bad-0999" and kept == sorted(kept)
        assert capped.outcome("job-1") == "accepted" and capped.job("job-1") is not None
        assert capped.record_command("bad-0999", "rejected:other") == "rejected:bad_value"  # still answered once
