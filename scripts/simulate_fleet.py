#!/usr/bin/env python3
"""A simulated fleet that speaks protocol v1: N boards (1,000 by default) in a few processes, each board its own
paho client with its own client id, credentials and connection, its retained status with a last will, telemetry,
and answers to the coordinator's and the dashboard's commands (ping, info, models, bench, eval, profile, select:
accepted, started, progress, done and the result), built with the agent's own message classes and encoder.

The figures come from real reports of this machine (one `edge-agent bench`, `profile`, `info` and `select` of
models/digits at start), scaled per board model (scripts/fleet_fill.py's five kinds), backend, precision and
threads, with now and then a slow outlier and, on a few boards, a lasting regression. Besides answering
commands, the fleet can publish results on its own at `--rate` per second (a schedule's benches), `--results`
of them in all, and send a share of them twice (`--replay`), as an outbox does after a lost PUBACK.

It stops by itself after `--duration` seconds (or once its own results are all acknowledged, with `--exit`),
says `{"ready": N}` on stdout when every board is connected and prints one JSON summary line at the end:
results acknowledged by the broker (with their device and command ids), replays, commands answered.

    .venv/bin/python scripts/simulate_fleet.py --port 1883 --boards 1000 --duration 120
    .venv/bin/python scripts/simulate_fleet.py --port 1883 --boards 200 --rate 100 --results 3000 --exit

Boards are `<prefix>-0000`...; with `--password P` every board logs in as its device id with password P
(scripts/bench_fleet.py makes the broker's password file and ACL for them).
"""

from __future__ import annotations

import argparse
import copy
import heapq
import json
import multiprocessing
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import fleet_fill  # noqa: E402

from agent import __version__  # noqa: E402
from agent.errors import ProtocolError  # noqa: E402
from agent.mqtt.messages import Event, Message, Result, Status, Telemetry, encode  # noqa: E402
from agent.mqtt.protocol import Command, Topics, parse_command  # noqa: E402

QUICK = ("ping", "info", "models", "cancel", "deploy")
JOB_SECONDS = {"bench": 1.0, "eval": 0.6, "profile": 1.5, "select": 2.0}  # on this machine; scaled per board model
OUTLIER_SHARE = 0.01  # a result now and then is this much slower (a board busy with something else)
OUTLIER_FACTOR = 1.6
REGRESSED_SHARE = 0.005  # boards whose latency is worse from half-way through the run (a bad update)
REGRESSION_FACTOR = 1.35
AGENT_RSS_MB = 30.0  # an agent daemon's RSS after a job: 28 MB for one here, rounded up (scripts/agent_memory.py)
Document = Dict[str, Any]


@dataclass(frozen=True)
class SimSettings:
    """One simulated fleet: where its broker is, how many boards, what they do on their own and for how long."""

    host: str = "127.0.0.1"
    port: int = 1883
    boards: int = 1000
    processes: int = 4
    prefix: str = "sim"
    password: Optional[str] = None
    root: str = "edge"
    duration_s: float = 60.0
    rate: float = 0.0  # results per second the fleet publishes on its own
    results: int = 0  # how many of those in all (0: as many as the rate and duration give)
    replay: float = 0.0  # share of those results published a second time
    telemetry_s: float = 30.0  # each board's telemetry interval (0: none)
    job_scale: float = 1.0  # multiplies how long a simulated job takes
    exit_when_sent: bool = False  # stop once its own results are acknowledged (commands still answered until then)
    seed: int = 7


class Figures:
    """Real reports of this machine, varied per board: the report each command's result carries."""

    def __init__(self, reports: Document) -> None:
        self.reports = reports

    def result(self, board: SimBoard, command: Command) -> Document:
        """The report a `command` to `board` finishes with."""
        if command.cmd == "ping":
            return {"pong": True, "version": __version__}
        if command.cmd == "info":
            return dict(self.reports["info"], device=board.device_section())
        if command.cmd == "models":
            return {"model_dir": "/var/lib/edge-agent/models",
                    "models": [{"name": "digits", "bundle": "models/digits", "task": "classification", "models": []}]}
        if command.cmd == "profile":
            return {"reports": [self._varied(board, self.reports["profile"], board.rng.choice((1, board.kind[3])))]}
        if command.cmd == "select":
            return self._selection(board)
        return self.measurement(board, command.cmd)

    def measurement(self, board: SimBoard, cmd: str = "bench") -> Document:
        """A bench (or eval) report: two configurations of the real bench, each at 1 thread or every core."""
        chosen = board.rng.sample(self.reports["bench"], k=min(2, len(self.reports["bench"])))
        varied = [self._varied(board, report, board.rng.choice((1, board.kind[3]))) for report in chosen]
        if cmd == "eval":
            for report in varied:
                report["kind"], report["latency"] = "eval", None
        return {"reports": varied}

    def _varied(self, board: SimBoard, template: Document, threads: int) -> Document:
        report = copy.deepcopy(template)
        report["device"] = board.device_section()
        configuration = report["backend"].setdefault("configuration", {})
        configuration["intra_op_threads" if report["backend"]["name"] == "onnxruntime" else "threads"] = threads
        factor = board.latency_factor(threads)
        latency = report.get("latency") or {}
        for key, value in list(latency.items()):
            if key.endswith("_ms") and isinstance(value, (int, float)):
                latency[key] = value * factor * board.rng.uniform(0.97, 1.05)
        if isinstance(latency.get("throughput_per_s"), (int, float)):
            latency["throughput_per_s"] /= factor
        if isinstance(latency.get("stability"), dict):
            latency["stability"]["verdict"] = "unstable" if board.rng.random() < 0.05 else "stable"
        return report

    def _selection(self, board: SimBoard) -> Document:
        report = copy.deepcopy(self.reports["select"])
        report["device"] = board.device_section()
        choice = report["selection"].get("choice")
        if isinstance(choice, dict):
            choice["threads"] = board.kind[3] if board.rng.random() < 0.5 else 1
            for key in ("p50_ms", "p99_ms"):
                if isinstance(choice.get(key), (int, float)):
                    choice[key] *= board.latency_factor(choice["threads"])
        return report


class SimBoard:
    """One simulated board: its own paho client (client id and username = device id), presence, commands."""

    def __init__(self, fleet: ProcessFleet, index: int) -> None:
        self.fleet, self.settings = fleet, fleet.settings
        self.device = f"{self.settings.prefix}-{index:04d}"
        self.kind = fleet_fill.BOARD_MODELS[index % len(fleet_fill.BOARD_MODELS)]
        self.groups = [fleet_fill.GROUPS[index % len(fleet_fill.GROUPS)]]
        self.topics = Topics(self.device, tuple(self.groups), self.settings.root)
        self.rng = random.Random(f"{self.settings.seed}-{index}")
        self.regressed = self.rng.random() < REGRESSED_SHARE
        self.answered: Dict[str, Result] = {}  # command id -> its result: a command seen before is not run again
        self.busy_until = 0.0  # the job lane: one measurement at a time
        self.connected = threading.Event()
        self.client = self._client()

    def _client(self) -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from agent.mqtt.link import connect_properties

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.device, protocol=paho.MQTTv5)
        if self.settings.password is not None:
            client.username_pw_set(self.device, self.settings.password)
        client.will_set(self.topics.topic("status"), self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.reconnect_delay_set(0.2, 2.0)
        client.connect_async(self.settings.host, self.settings.port, keepalive=60, clean_start=False,
                             properties=connect_properties(True, 3600))
        return client

    def device_section(self) -> Document:
        """The `device` section of this board's reports: its model, CPU and memory."""
        model, jetpack, cpu, cores, _, _ = self.kind
        return {"kind": "jetson" if jetpack else "generic", "summary": f"{model} ({cores} cores)", "model": model,
                "cpu": {"model": cpu, "arch": "x86_64" if "EPYC" in cpu else "aarch64", "cores": cores},
                "memory_total_mib": 8192, "jetson": {"jetpack": jetpack} if jetpack else None,
                "fingerprint": uuid.uuid5(uuid.NAMESPACE_DNS, self.device).hex[:16]}

    def latency_factor(self, threads: int) -> float:
        """How much slower than this machine: the board model, fewer threads, an outlier, a regression."""
        factor = self.kind[4] * (1.0 if threads > 1 else 1.4)
        if self.rng.random() < OUTLIER_SHARE:
            factor *= OUTLIER_FACTOR
        if self.regressed and self.fleet.elapsed() > self.settings.duration_s / 2:
            factor *= REGRESSION_FACTOR
        return factor

    def _status(self, state: str) -> bytes:
        platform = {"summary": f"{self.kind[0]} (simulated)", "machine": "aarch64", "python": "3.10.12"}
        return encode(Status(self.device, state, __version__, self.groups, platform))

    # paho's network thread: record and return ----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.fleet.note("refused")
            return
        client.subscribe([(topic, 1) for topic in self.topics.subscriptions()])
        client.publish(self.topics.topic("status"), self._status("online"), qos=1, retain=True)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        properties = getattr(message, "properties", None)
        reply = (getattr(properties, "ResponseTopic", None), getattr(properties, "CorrelationData", None))
        self.fleet.later(0.0, lambda: self.command(bytes(message.payload), *reply))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.fleet.acked(self, mid)

    # the fleet's scheduler thread ----------------------------------------------------------------

    def publish(self, message: Message, command: Optional[Command] = None) -> int:
        """Publish a message where `Topics` routes it (and to the command's response topic); its mid."""
        mid = 0
        for item in self.topics.publications(message, command):
            properties = None
            if item.correlation_data is not None:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = item.correlation_data
            info = self.client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain,
                                       properties=properties)
            mid = mid or info.mid
        return mid

    def command(self, payload: bytes, response_topic: Optional[str], correlation: Optional[bytes]) -> None:
        """Answer one command as the daemon does: rejected, or accepted and then run (quick or in the job lane)."""
        try:
            command = parse_command(payload, response_topic=response_topic, correlation_data=correlation)
        except ProtocolError as error:
            self.publish(Event(self.device, error.command_id, "rejected", code=error.code, message=error.message))
            return
        self.fleet.note("commands")
        if command.id in self.answered:
            self.publish(Event(self.device, command.id, "accepted", cmd=command.cmd, detail={"duplicate": True}))
            self.fleet.sent(self, self.answered[command.id], command)
            return
        self.publish(Event(self.device, command.id, "accepted", cmd=command.cmd), command)
        if command.cmd in QUICK:
            self._finish(command)
            return
        took = JOB_SECONDS.get(command.cmd, 1.0) * self.settings.job_scale * self.kind[4] ** 0.5
        start = max(self.fleet.elapsed(), self.busy_until)
        self.busy_until = start + took
        begin = start - self.fleet.elapsed()
        self.fleet.later(begin, lambda: self.publish(Event(self.device, command.id, "started", cmd=command.cmd),
                                                     command))
        for step in (1, 2):
            self.fleet.later(begin + took * step / 3, lambda step=step: self.publish(Event(
                self.device, command.id, "progress", cmd=command.cmd, progress=step / 3,
                detail={"phase": "measure"}), command))
        self.fleet.later(begin + took, lambda: self._finish(command))

    def _finish(self, command: Command) -> None:
        result = Result(self.device, command.id, command.cmd, "done", self.fleet.figures.result(self, command))
        self.answered[command.id] = result
        if command.cmd not in QUICK:
            self.publish(Event(self.device, command.id, "done", cmd=command.cmd), command)
        self.fleet.sent(self, result, command)

    def scheduled_result(self) -> None:
        """A bench result of a scheduled job, published on the board's own (a new command id)."""
        result = Result(self.device, uuid.uuid4().hex, "bench", "done", self.fleet.figures.measurement(self))
        self.fleet.sent(self, result, None)
        if self.rng.random() < self.settings.replay:
            self.fleet.note("replays_due")
            self.fleet.later(self.rng.uniform(0.1, 2.0), lambda: self.fleet.sent(self, result, None, True))

    def telemetry(self) -> None:
        """One telemetry message: load, memory, temperatures, clocks."""
        hottest = self.kind[5] + self.rng.uniform(-2, 12) + (15 if self.busy_until > self.fleet.elapsed() else 0)
        readings = {"load": [round(self.rng.uniform(0, 2), 2)] * 3,
                    "memory_mb": {"total": 8192.0, "available": round(self.rng.uniform(3000, 7000), 1)},
                    "agent_rss_mb": round(AGENT_RSS_MB * self.rng.uniform(0.9, 1.0), 1),
                    "temperature_c": {"cpu-thermal": round(hottest, 1)}, "max_temperature_c": round(hottest, 1),
                    "cpu_mhz": {"mean": round(self.rng.uniform(1200, 1800)), "max": 1800.0},
                    "throttled": hottest > 68, "throttle_reasons": []}
        self.publish(Telemetry(self.device, readings))


class ProcessFleet:
    """The boards of one process, and the one thread that does their work in time order."""

    def __init__(self, settings: SimSettings, indices: Sequence[int], reports: Document) -> None:
        self.settings = settings
        self.figures = Figures(reports)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._sequence = 0
        self._wake = threading.Event()
        self._inflight: Dict[Tuple[int, int], Tuple[str, str]] = {}  # (board, mid) -> the result's ids
        self._early: Set[Tuple[int, int]] = set()  # PUBACKs that came back before `publish` returned
        self.results_acked: List[Tuple[str, str]] = []
        self.counts: Dict[str, int] = {"commands": 0, "replays": 0, "refused": 0, "results_published": 0}
        self.boards = [SimBoard(self, index) for index in indices]

    def elapsed(self) -> float:
        """Seconds since this process's fleet started."""
        return time.monotonic() - self.started

    def note(self, what: str) -> None:
        """Count something that happened (thread-safe)."""
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run `action` on the scheduler thread after `delay_s` seconds."""
        with self._lock:
            self._sequence += 1
            heapq.heappush(self._timers, (self.elapsed() + max(0.0, delay_s), self._sequence, action))
        self._wake.set()

    def sent(self, board: SimBoard, result: Result, command: Optional[Command], replay: bool = False) -> None:
        """Publish a result; it counts once the broker acknowledged it. (Not under the lock: paho calls
        `acked` holding its own.)"""
        mid = board.publish(result, command)
        with self._lock:
            self.counts["results_published"] += 1
            self.counts["replays"] += replay
            if (id(board), mid) in self._early:
                self._early.discard((id(board), mid))
                self.results_acked.append((board.device, result.command_id))
            else:
                self._inflight[(id(board), mid)] = (board.device, result.command_id)

    def acked(self, board: SimBoard, mid: int) -> None:
        """paho's PUBACK of one of `board`'s messages (every kind: only results are waited for)."""
        with self._lock:
            found = self._inflight.pop((id(board), mid), None)
            if found is not None:
                self.results_acked.append(found)
            elif len(self._early) < 100_000:
                self._early.add((id(board), mid))

    def run(self, ready: Callable[[int], None], stop: Any) -> Document:
        """Connect every board, do the fleet's work until the duration ends (or `stop` is set); the summary."""
        settings = self.settings
        for board in self.boards:
            board.client.loop_start()
        deadline = time.monotonic() + 60
        while not all(board.connected.is_set() for board in self.boards) and time.monotonic() < deadline:
            time.sleep(0.05)
        ready(sum(board.connected.is_set() for board in self.boards))
        self.started = time.monotonic()
        share = settings.rate / max(1, settings.processes)
        quota = settings.results // max(1, settings.processes) if settings.results else None
        own, rng = 0, random.Random(settings.seed)
        if settings.telemetry_s > 0:
            for board in self.boards:
                self.later(rng.uniform(0, settings.telemetry_s), lambda board=board: self._telemetry(board))
        while self.elapsed() < settings.duration_s and not stop.is_set():
            due = int(self.elapsed() * share) if share else 0
            while own < due and (quota is None or own < quota):
                rng.choice(self.boards).scheduled_result()
                own += 1
            self._run_due()
            if settings.exit_when_sent and (quota is None or own >= quota) and self._drained():
                break
            self._wake.wait(0.005 if share else 0.2)
            self._wake.clear()
        return self._stop()

    def _telemetry(self, board: SimBoard) -> None:
        board.telemetry()
        self.later(self.settings.telemetry_s, lambda: self._telemetry(board))

    def _run_due(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self.elapsed():
                    return
                action = heapq.heappop(self._timers)[2]
            action()

    def _drained(self) -> bool:
        """No result waits for its PUBACK or its replay, and no board is running a job."""
        with self._lock:
            waiting = bool(self._inflight)
            replaying = self.counts.get("replays_due", 0) > self.counts["replays"]
        return not waiting and not replaying and all(board.busy_until <= self.elapsed() for board in self.boards)

    def _stop(self) -> Document:
        """Wait a little for outstanding PUBACKs, publish `offline` and disconnect every board cleanly."""
        deadline = time.monotonic() + 10
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        for board in self.boards:
            board.client.publish(board.topics.topic("status"), board._status("offline"), qos=1, retain=True)
        time.sleep(0.5)
        for board in self.boards:
            board.client.disconnect()
            board.client.loop_stop()
        with self._lock:
            return {"results": self.results_acked, "unacknowledged": len(self._inflight), **self.counts}


def _process_main(settings: SimSettings, indices: Sequence[int], reports: Document, out: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent sets `stop`
    fleet = ProcessFleet(settings, indices, reports)
    out.put(("summary", fleet.run(lambda count: out.put(("ready", count)), stop)))


def real_reports() -> Document:
    """What the boards' figures are drawn from: one bench and profile (scripts/fleet_fill.py), info and select of
    models/digits, run on this machine now."""
    reports = fleet_fill.real_reports()
    reports["info"] = fleet_fill.run_json("info")
    reports["select"] = fleet_fill.run_json("select", "models/digits", "--eval-limit", "90")
    return reports


def simulate(settings: SimSettings, reports: Document, say: Callable[[Document], None] = print) -> Document:
    """Run the fleet in `settings.processes` processes; `say` gets `{"ready": N}` and then the summary. SIGTERM
    or SIGINT ends it early, cleanly (each board publishes `offline`)."""
    context = multiprocessing.get_context("spawn")
    out, stop = context.Queue(), context.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    indices = list(range(settings.boards))
    workers = [context.Process(target=_process_main, daemon=True,
                               args=(settings, indices[part::settings.processes], reports, out, stop))
               for part in range(settings.processes)]
    for worker in workers:
        worker.start()
    ready, answered, summaries = 0, 0, []
    deadline = time.monotonic() + settings.duration_s + 120
    while len(summaries) < len(workers) and time.monotonic() < deadline:
        try:
            kind, value = out.get(timeout=1.0)
        except Exception:  # queue.Empty, from the multiprocessing queue
            if not any(worker.is_alive() for worker in workers):
                break
            continue
        if kind == "ready":
            ready, answered = ready + value, answered + 1
            if answered == len(workers):
                say({"ready": ready})
        else:
            summaries.append(value)
    for worker in workers:
        worker.join(timeout=15)
        if worker.is_alive():
            worker.kill()
    summary: Document = {"boards": settings.boards, "connected": ready, "results": []}
    for part in summaries:
        for key, value in part.items():
            summary[key] = summary.get(key, 0) + value if key != "results" else summary["results"] + value
    summary["results_acked"] = len(summary["results"])
    say(summary)
    return summary


def settings_from(args: argparse.Namespace) -> SimSettings:
    """The fleet's settings from the command line."""
    return SimSettings(host=args.host, port=args.port, boards=args.boards, processes=max(1, min(args.processes,
                       args.boards)), prefix=args.prefix, password=args.password, root=args.root,
                       duration_s=args.duration, rate=args.rate, results=args.results, replay=args.replay,
                       telemetry_s=args.telemetry, job_scale=args.job_scale, exit_when_sent=args.exit, seed=args.seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--boards", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--prefix", default="sim")
    parser.add_argument("--password", help="every board's broker password (username = device id)")
    parser.add_argument("--root", default="edge")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds before it stops by itself")
    parser.add_argument("--rate", type=float, default=0.0, help="results per second published on the boards' own")
    parser.add_argument("--results", type=int, default=0, help="that many in all (0: rate x duration)")
    parser.add_argument("--replay", type=float, default=0.0, help="share of those published twice")
    parser.add_argument("--telemetry", type=float, default=30.0, help="telemetry interval per board (0: none)")
    parser.add_argument("--job-scale", type=float, default=1.0, help="multiplies how long a simulated job takes")
    parser.add_argument("--exit", action="store_true", help="stop once its own results are all acknowledged")
    parser.add_argument("--reports", type=Path, help="real reports saved by an earlier run (else made now)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.reports and args.reports.exists():
        reports = json.loads(args.reports.read_text())
    else:
        reports = real_reports()
        if args.reports:
            args.reports.write_text(json.dumps(reports))
    summary = simulate(settings_from(args), reports, lambda line: print(json.dumps(line), flush=True))
    return 0 if summary["connected"] == args.boards and not summary["unacknowledged"] else 1


if __name__ == "__main__":
    sys.exit(main())
