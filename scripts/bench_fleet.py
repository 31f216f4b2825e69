#!/usr/bin/env python3
"""The coordinator under a simulated fleet (scripts/simulate_fleet.py), on a real Mosquitto with a password per
board and the shipped ACL, on SQLite and on PostgreSQL, all on 127.0.0.1. One run prints, per database:

- a fleet-wide bench to every board (1,000 by default): how many boards it reached, whether all of their results
  landed in its one fleet job, and how long that took;
- result -> queryable latency at a steady load (100 results/s by default): a probe board publishes a result every
  0.2 s and asks the API for it until it answers; p50 and p99;
- the ingest rate: results queued in the coordinator's broker session while it is stopped (a burst, some sent
  twice as an outbox does), then drained when it starts; results stored per second, duplicates absorbed;
- the same again once the measurements stored are doubled `--history` times (5: about 32 times what the run
  stored, each copy a day older): ingest must not slow down as a configuration's history grows;
- results sent (acknowledged by the broker) against stored, and lost (must be 0); the coordinator's RSS and
  CPU while draining, the broker's RSS.

    .venv/bin/python scripts/bench_fleet.py                              # 1,000 boards, both databases
    .venv/bin/python scripts/bench_fleet.py --boards 200 --burst 2000 --database sqlite

Exits 1 when a result was lost or a target missed (>= 500 results/s stored, with and without the long history;
p99 <= 1 s at 100 results/s; the fleet-wide job done on every board).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_dashboard  # noqa: E402
import simulate_fleet  # noqa: E402
from sqlalchemy import func, insert, literal_column, select, text  # noqa: E402
from support.broker import Broker  # noqa: E402
from support.coordinator import (  # noqa: E402
    CoordinatorProcess,
    board_states,
    finished_job,
    ingested,
    stored_results,
    wait_for,
)

from agent.fleet.store.database import Store, open_store  # noqa: E402
from agent.fleet.store.models import Measurement, StoredResult  # noqa: E402
from agent.mqtt.messages import Result, encode  # noqa: E402
from agent.mqtt.protocol import Topics  # noqa: E402

PASSWORD = "bench-fleet-password"
ACL = ROOT / "deploy" / "mosquitto" / "acl"
RATE_TARGET = 500.0
P99_TARGET_S = 1.0
Pairs = Set[Tuple[str, str]]


@dataclass
class Drain:
    """Results queued in the coordinator's broker session while it was stopped, and how fast it stored them."""

    results: int = 0
    seconds: float = 0.0
    coordinator_cpu_pct: float = 0.0

    @property
    def rate(self) -> float:
        """Results stored per second while the queue drained."""
        return self.results / self.seconds if self.seconds else 0.0


@dataclass
class Figures:
    """What one database's run measured."""

    database: str
    boards: int = 0
    job_reached: int = 0
    job_done: int = 0
    job_results: int = 0
    job_s: float = 0.0
    latency_ms: List[float] = field(default_factory=list)
    steady_rate: float = 0.0
    burst: Drain = field(default_factory=Drain)
    history: Drain = field(default_factory=Drain)  # the same, with a long history stored
    history_measurements: int = 0
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    coordinator_rss_mb: float = 0.0
    broker_rss_mb: float = 0.0

    def percentile(self, share: float) -> float:
        """A percentile of the result -> queryable latencies (ms)."""
        ordered = sorted(self.latency_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def broker_files(folder: Path, devices: List[str], operators: Tuple[str, ...] = ("coordinator",)) -> Tuple[Path, Path]:
    """A password file (each board its own account, and the operators': their rights are in the shipped ACL) and
    the shipped ACL with one block per board (the broadcast and its group's command topics)."""
    passwords = folder / "passwd"
    passwords.write_text("".join(f"{name}:{PASSWORD}\n" for name in [*operators, *devices]))
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, timeout=120)
    blocks = [ACL.read_text()]
    for index, device in enumerate(devices):
        group = simulate_fleet.fleet_fill.GROUPS[index % len(simulate_fleet.fleet_fill.GROUPS)]
        blocks.append(f"user {device}\ntopic read edge/all/cmd\ntopic read edge/group/{group}/cmd\n")
    acl = folder / "acl"
    acl.write_text("\n".join(blocks))
    return passwords, acl


class Simulation:
    """scripts/simulate_fleet.py as a process: ready once it says so; its summary when it ends."""

    def __init__(self, broker: Broker, reports: Path, prefix: str, boards: int, *options: str) -> None:
        command = [sys.executable, str(ROOT / "scripts" / "simulate_fleet.py"), "--port", str(broker.port),
                   "--password", PASSWORD, "--prefix", prefix, "--boards", str(boards), "--reports", str(reports),
                   *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if '"ready"' not in line:
            raise SystemExit(f"the simulator did not start: {line!r}")
        self.ready = json.loads(line)["ready"]

    def summary(self, stop: bool = False, timeout: float = 300) -> Dict[str, Any]:
        """Its summary (SIGTERM first with `stop`)."""
        if stop:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])


def acked(summary: Dict[str, Any]) -> Pairs:
    """The (device, command id) of every result the broker acknowledged to the simulator."""
    return {(device, command_id) for device, command_id in summary["results"]}


def rss_mb(pid: int) -> float:
    """A process's resident memory now (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst_stored(store: Store, prefix: str) -> Tuple[int, float]:
    """How many results of the boards named `prefix`... are stored, and the seconds from the first to the last
    one's `received_at`."""
    with store.session() as session:
        count, first, last = session.execute(
            select(func.count(), func.min(StoredResult.received_at), func.max(StoredResult.received_at))
            .where(StoredResult.device_id.startswith(prefix))).one()
    return count, (last - first).total_seconds() if first and last else 0.0


def drain(broker: Broker, service: CoordinatorProcess, store: Store, reports: Path, prefix: str,
          args: argparse.Namespace, replay: float, while_stopped: Callable[[], None] = lambda: None
          ) -> Tuple[Pairs, Drain]:
    """Stop the coordinator (and run `while_stopped`), let `args.load_boards` boards named `prefix`... queue
    `args.burst` results in its broker session (a share `replay` of them sent twice), start it and time until all
    are stored."""
    assert service.stop() == 0
    while_stopped()
    flood = Simulation(broker, reports, prefix, args.load_boards, "--rate", str(args.burst), "--results",
                       str(args.burst), "--replay", str(replay), "--exit", "--duration", "300", "--telemetry", "0",
                       "--processes", "2")
    pairs = acked(flood.summary())
    service.start()
    pid = service.process.pid if service.process else 0
    started, cpu_before = time.monotonic(), cpu_s(pid)
    wait_for(f"the {prefix} results stored", lambda: burst_stored(store, f"{prefix}-")[0] >= len(pairs), timeout=900,
             every=0.5)
    cpu_pct = 100 * (cpu_s(pid) - cpu_before) / (time.monotonic() - started)
    return pairs, Drain(len(pairs), burst_stored(store, f"{prefix}-")[1], cpu_pct)


def grow_history(store: Store, doublings: int) -> int:
    """Double the measurements stored `doublings` times, each copy a day further back: the same configurations
    with the history months of a fleet's results leave (what a baseline query must not slow down with). Returns
    how many are stored then."""
    table = Measurement.__table__
    names = [column.key for column in table.c if column.key != "id"]
    with store.engine.begin() as connection:
        postgresql = connection.dialect.name == "postgresql"
        for day in range(1, doublings + 1):
            earlier = (f"ts - interval '{day} days'" if postgresql else
                       f"strftime('%Y-%m-%d %H:%M:%f', ts, '-{day} days')")
            copies = select(*(literal_column(earlier) if name == "ts" else table.c[name] for name in names))
            connection.execute(insert(table).from_select(names, copies))
        connection.execute(text("ANALYZE measurements"))
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


class Probe:
    """A board of its own that publishes a result every `every_s` and times how long until the API has it."""

    def __init__(self, broker: Broker, service: CoordinatorProcess, device: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.service, self.device, self.topics = service, device, Topics(device)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
        self.client.username_pw_set(device, PASSWORD)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.sent: Pairs = set()

    def measure(self, seconds: float, every_s: float = 0.2) -> List[float]:
        """Latencies (ms) of the results published over `seconds`."""
        latencies, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            command_id = uuid.uuid4().hex
            payload = encode(Result(self.device, command_id, "ping", "done", {"pong": True}))
            started = time.perf_counter()
            self.client.publish(self.topics.topic("result"), payload, qos=1).wait_for_publish(10)
            self.sent.add((self.device, command_id))
            while self.service.api.call("GET", f"/api/v1/results/{self.device}/{command_id}")[0] != 200:
                if time.perf_counter() - started > 30:
                    break
                time.sleep(0.02)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(max(0.0, every_s - (time.perf_counter() - started)))
        return latencies

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def run_database(kind: str, url: str, folder: Path, reports: Path, args: argparse.Namespace) -> Figures:
    """Every phase on one database."""
    figures = Figures(kind, boards=args.boards)
    devices = [f"sim-{index:04d}" for index in range(args.boards)]
    load = [f"load-{index:04d}" for index in range(args.load_boards)]
    queued = [f"{prefix}-{index:04d}" for prefix in ("burst", "history") for index in range(args.load_boards)]
    passwords, acl = broker_files(folder, [*devices, *load, *queued, "probe-0"])
    extra = "max_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\nmax_connections -1"
    store = open_store(url)
    with Broker(folder / "broker", password_file=passwords, acl_file=acl, extra_config=extra) as broker:
        assert broker.process is not None
        service = CoordinatorProcess(folder / "coordinator", broker, url, settings={
            "mqtt": {"username": "coordinator", "password": PASSWORD}, "jobs": {"timeout_s": 600}}).start()
        sent: Pairs = set()
        duplicates = 0.0
        try:
            fleet = Simulation(broker, reports, "sim", args.boards, "--duration", "1800", "--telemetry", "60",
                               "--processes", str(args.processes))
            print(f"{kind}: {fleet.ready} boards connected", file=sys.stderr)
            wait_for("every board online", lambda: _online(service) >= args.boards, timeout=300, every=1.0)
            started = time.monotonic()
            status, job = service.api.call("POST", "/api/v1/jobs", {"target": "all", "cmd": "bench",
                                                                    "args": {"model": "models/digits"}})
            assert status == 202, job
            figures.job_reached = len(job["boards"])
            done = wait_for("the fleet job finished", lambda: finished_job(service, job["id"]), timeout=600, every=1.0)
            figures.job_s = time.monotonic() - started
            figures.job_done = done["counts"].get("done", 0)
            figures.job_results = sum(1 for pair in stored_results(store) if pair[1] == job["id"])
            print(f"{kind}: fleet job on {figures.job_reached} boards, {figures.job_done} done in "
                  f"{figures.job_s:.1f} s", file=sys.stderr)

            steady = Simulation(broker, reports, "load", args.load_boards, "--rate", str(args.rate), "--duration",
                                str(args.steady_s + 5), "--telemetry", "0", "--processes", "1")
            probe = Probe(broker, service, "probe-0")
            figures.latency_ms = probe.measure(args.steady_s)
            probe.close()
            summary = steady.summary()
            sent |= acked(summary) | probe.sent
            figures.steady_rate = len(acked(summary)) / (args.steady_s + 5)
            print(f"{kind}: p50 {figures.percentile(0.5):.0f} ms, p99 {figures.percentile(0.99):.0f} ms at "
                  f"{figures.steady_rate:.0f} results/s", file=sys.stderr)

            duplicates += ingested(service, "duplicate")
            burst_pairs, figures.burst = drain(broker, service, store, reports, "burst", args, replay=0.02)
            sent |= burst_pairs
            pid = service.process.pid if service.process else 0
            figures.coordinator_rss_mb = rss_mb(pid)
            figures.broker_rss_mb = rss_mb(broker.process.pid)
            time.sleep(2)
            duplicates += ingested(service, "duplicate")
            if args.history:
                def grow() -> None:
                    figures.history_measurements = grow_history(store, args.history)

                history_pairs, figures.history = drain(broker, service, store, reports, "history", args, replay=0.0,
                                                       while_stopped=grow)
                sent |= history_pairs
            sent |= acked(fleet.summary(stop=True))
        finally:
            service.kill()
    stored = stored_results(store)
    store.close()
    figures.sent, figures.stored, figures.lost = len(sent), len(stored), len(sent - stored)
    figures.duplicates = int(duplicates)
    return figures


def _online(service: CoordinatorProcess) -> int:
    return sum(1 for state in board_states(service).values() if state == "online")


def _drained(drained: Drain) -> str:
    return (f"{drained.results} queued results stored in {drained.seconds:.1f} s = {drained.rate:.0f} results/s "
            f"(target >= {RATE_TARGET:.0f})")


def report(all_figures: List[Figures], args: argparse.Namespace) -> bool:
    """Print the table; whether every target was met."""
    print(f"\nThe coordinator under {args.boards} simulated boards (scripts/bench_fleet.py), one Mosquitto, all on "
          f"127.0.0.1 ({os.cpu_count()} CPUs)")
    good = True
    for item in all_figures:
        checks = {"lost": item.lost == 0, "rate": item.burst.rate >= RATE_TARGET,
                  "history": not args.history or item.history.rate >= RATE_TARGET,
                  "p99": item.percentile(0.99) <= P99_TARGET_S * 1000,
                  "job": item.job_reached == item.boards == item.job_done == item.job_results}
        good = good and all(checks.values())
        mark = {name: "ok" if passed else "MISSED" for name, passed in checks.items()}
        print(f"\n[{item.database}]")
        print(f"  fleet-wide bench: reached {item.job_reached} of {item.boards} boards, {item.job_done} done, "
              f"{item.job_results} results in the one job, in {item.job_s:.1f} s   {mark['job']}")
        print(f"  results sent {item.sent}, stored {item.stored}, lost {item.lost}   {mark['lost']};  duplicates "
              f"absorbed {item.duplicates}")
        print(f"  ingest rate: {_drained(item.burst)}   {mark['rate']}")
        if args.history:
            print(f"  ingest rate with {item.history_measurements} measurements stored: {_drained(item.history)}   "
                  f"{mark['history']}")
        print(f"  result -> queryable at {item.steady_rate:.0f} results/s: p50 {item.percentile(0.5):.0f} ms, p99 "
              f"{item.percentile(0.99):.0f} ms over {len(item.latency_ms)} results (target p99 <= "
              f"{P99_TARGET_S * 1000:.0f} ms)   {mark['p99']}")
        print(f"  coordinator RSS {item.coordinator_rss_mb:.0f} MB, CPU {item.burst.coordinator_cpu_pct:.0f}% of a "
              f"core while draining; broker RSS {item.broker_rss_mb:.0f} MB")
    return good


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4, help="simulator processes for the boards")
    parser.add_argument("--load-boards", type=int, default=100, help="boards of the steady load and the burst")
    parser.add_argument("--rate", type=float, default=100.0, help="results/s of the steady load")
    parser.add_argument("--steady-s", type=float, default=20.0, help="how long the latency is measured")
    parser.add_argument("--burst", type=int, default=5000, help="results queued while the coordinator is stopped")
    parser.add_argument("--history", type=int, default=5, help="then double the measurements stored this many "
                        "times (each copy a day older) and drain another burst (0: skip)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--reports", type=Path, help="real reports saved by an earlier run (else made now)")
    args = parser.parse_args()
    results: List[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        reports = args.reports or Path(folder) / "reports.json"
        if not reports.exists():
            print("running edge-agent bench, profile, info and select of models/digits once ...", file=sys.stderr)
            reports.write_text(json.dumps(simulate_fleet.real_reports()))
        for kind in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
            work = Path(folder) / kind
            work.mkdir()
            with bench_dashboard.database(kind, work) as url:
                results.append(run_database(kind, url, work, reports, args))
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
