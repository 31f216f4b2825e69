"""agent/fleet/jobs.py on both databases: a command to one board, a group or all is one fleet job with a state
per board, moved by the boards' real event and result messages through ingest; offline boards wait (or fail,
per config) and get the command when they are back; deadlines end what is left; a late result still lands;
bad commands and unknown targets are refused before anything is sent."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest
from support.fleet import RealReports, at, bench_result, status, ts, wire

from agent.errors import JobError
from agent.fleet import jobs
from agent.fleet.ingest import ingest
from agent.fleet.settings import JobSettings
from agent.fleet.store.database import Store
from agent.mqtt.protocol import Event, parse_command

WAIT = JobSettings(timeout_s=600, offline="wait")


def _boards(store: Store) -> None:
    """board-a and board-b online in group lab, board-c offline in group shelf."""
    for device, state, group in (("board-a", "online", "lab"), ("board-b", "online", "lab"),
                                 ("board-c", "offline", "shelf")):
        ingest(store, *status(device, state, groups=[group]), received_at=at(0))


def _states(store: Store, job_id: str) -> Dict[str, str]:
    view = jobs.get_job(store, job_id)
    assert view is not None
    return {board.device_id: board.state for board in view.boards}


def _event(device: str, job_id: str, event: str, **fields: Any) -> Tuple[str, bytes]:
    return wire(Event(device, job_id, event, cmd="bench", ts=ts(5), **fields))


def test_a_job_to_all_sends_to_the_online_boards_and_waits_for_the_offline_one(store: Store) -> None:
    _boards(store)
    view, sends = jobs.create_job(store, "all", "bench", {"model": "digits"}, WAIT, "edge", at(1), "ops")
    assert _states(store, view.id) == {"board-a": "sent", "board-b": "sent", "board-c": "pending"}
    assert [(send.device_id, send.topic) for send in sends] == [("board-a", "edge/board-a/cmd"),
                                                                ("board-b", "edge/board-b/cmd")]
    command = parse_command(sends[0].payload)  # what the board receives parses as the board parses it
    assert command.id == view.id and command.cmd == "bench" and command.args["model"] == "digits"
    assert view.created_by == "ops" and view.counts == {"sent": 2, "pending": 1} and not view.finished

    outcome = ingest(store, *status("board-c", "online", seconds=30, groups=["shelf"]), received_at=at(30))
    assert [send.device_id for send in outcome.sends] == ["board-c"]
    assert parse_command(outcome.sends[0].payload).id == view.id
    assert _states(store, view.id)["board-c"] == "sent"
    again = ingest(store, *status("board-c", "online", seconds=31, groups=["shelf"]), received_at=at(31))
    assert again.sends == ()  # sent once


def test_events_and_results_move_each_board_and_a_late_result_lands(store: Store, real: RealReports) -> None:
    _boards(store)
    view, _ = jobs.create_job(store, "group:lab", "bench", {"model": "digits"}, WAIT, "edge", at(1))
    assert set(_states(store, view.id)) == {"board-a", "board-b"}
    ingest(store, *_event("board-a", view.id, "accepted"), received_at=at(2))
    ingest(store, *_event("board-a", view.id, "progress", progress=0.5), received_at=at(3))
    running = jobs.get_job(store, view.id)
    assert running is not None
    assert [(board.state, board.progress) for board in running.boards][0] == ("running", 0.5)
    ingest(store, *_event("board-b", view.id, "rejected", code="busy", message="queue full"), received_at=at(3))
    ingest(store, *_event("board-a", view.id, "done"), received_at=at(4))
    assert _states(store, view.id)["board-a"] == "running"  # the result ends it, with what it made
    ingest(store, *bench_result("board-a", real.host, view.id, seconds=4), received_at=at(4))
    ended = jobs.get_job(store, view.id)
    assert ended is not None and ended.finished
    a, b = ended.boards
    assert (a.state, a.result_id is not None, b.state, b.detail) == ("done", True, "rejected", "busy: queue full")
    ingest(store, *_event("board-a", view.id, "progress", progress=0.9), received_at=at(5))
    assert _states(store, view.id)["board-a"] == "done"  # an event never moves a final state back

    late, _ = jobs.create_job(store, "board-a", "bench", {"model": "digits"}, JobSettings(timeout_s=10), "edge",
                              at(10))
    assert jobs.expire(store, at(30)) == 1
    assert _states(store, late.id) == {"board-a": "timed_out"}
    ingest(store, *bench_result("board-a", real.host, late.id, seconds=40), received_at=at(40))
    assert _states(store, late.id) == {"board-a": "done"}


def test_an_offline_board_that_never_returns_is_offline_or_fails_at_once(store: Store) -> None:
    _boards(store)
    waiting, _ = jobs.create_job(store, "board-c", "ping", {}, JobSettings(timeout_s=60), "edge", at(1))
    assert jobs.expire(store, at(30)) == 0
    assert jobs.expire(store, at(61)) == 1
    view = jobs.get_job(store, waiting.id)
    assert view is not None and view.boards[0].state == "offline" and "never came back" in str(view.boards[0].detail)
    failing, sends = jobs.create_job(store, "board-c", "ping", {}, JobSettings(offline="fail"), "edge", at(2))
    assert sends == [] and _states(store, failing.id) == {"board-c": "offline"}


@pytest.mark.parametrize("target, cmd, args, code", [
    ("board-z", "ping", {}, "unknown_board"),
    ("group:nobody", "ping", {}, "no_boards"),
    ("all", "reboot", {}, "unknown_command"),
    ("all", "bench", {"model": "digits", "iterations": "many"}, "wrong_type"),
])
def test_a_bad_command_or_target_is_refused_before_anything_is_sent(store: Store, target: str, cmd: str,
                                                                    args: Dict[str, Any], code: str) -> None:
    _boards(store)
    with pytest.raises(JobError) as refused:
        jobs.create_job(store, target, cmd, args, WAIT, "edge", at(1))
    assert refused.value.code == code and "\n" not in refused.value.message
    assert jobs.list_jobs(store) == []


def test_jobs_list_newest_first_and_serialize(store: Store) -> None:
    _boards(store)
    made: List[str] = [jobs.create_job(store, "board-a", "ping", {}, WAIT, "edge", at(second))[0].id
                       for second in (1, 2, 3)]
    listed = jobs.list_jobs(store)
    assert [view.id for view in listed] == made[::-1]
    document = json.loads(json.dumps(listed[0].to_dict()))
    assert document["boards"][0]["state"] == "sent" and document["created_at"].endswith("Z")
    assert jobs.get_job(store, "no-such-job") is None
