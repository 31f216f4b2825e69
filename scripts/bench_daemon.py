#!/usr/bin/env python3
"""The daemon's targets, measured on a real Mosquitto on 127.0.0.1 with a real `edge-agent run`.

    .venv/bin/python scripts/bench_daemon.py [--idle-seconds 20] [--pings 200]
    .venv/bin/python scripts/bench_daemon.py --soak 20     # the fault loops, 20 runs each (pytest -m slow)

Prints one row per target: start -> retained `online` (<= 2 s), idle RSS (<= 60 MB) and CPU
(<= 1% of a core) with telemetry every 5 s, command -> `accepted` p50/p99 over sequential pings
(p99 <= 50 ms), the RSS after bench, eval, profile and select on every bundled model (<= 40 MB: every
job runs in the job process and its workers, never in the daemon), and 200 commands published
at once (10 benchmarks and 190 cheap commands, mixed): every one answered exactly once, cheap ones
before the queued benchmarks, benchmarks in order; then 10,000 commands the intake rejects: every one
answered, the RSS within 10 % of what it was before the flood, and the store's size after it (rejected
ids are capped: `jobs.max_rejected_ids`).
Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import QUICK_BENCH, AgentProcess, coordinator, wait_status  # noqa: E402
from support.broker import Broker  # noqa: E402

from agent.mqtt.protocol import Command, Event, Result, decode_message, encode_command  # noqa: E402

TARGETS = {"start_to_online_s": 2.0, "idle_rss_mb": 60.0, "idle_cpu_percent": 1.0, "accepted_p99_ms": 50.0,
           "rss_after_jobs_mb": 40.0, "flood_rss_ratio": 1.10}
CHEAP = ("ping", "models", "info")
TELEMETRY_S = 5.0  # half the default interval
BROKER_CONFIG = "set_tcp_nodelay true"  # as deploy/mosquitto/mosquitto.conf: no Nagle delay on small packets
MODELS = ("digits", "mobilenet_v2")  # the bundled models (models/), each in the agent's store
JOBS: Tuple[Tuple[str, Dict[str, Any]], ...] = (  # small limits: every job kind, quickly
    ("bench", {"warmup": 1, "iterations": 10, "min_seconds": 0, "eval_limit": 16}),
    ("eval", {"eval_limit": 16}),
    ("profile", {"iterations": 10}),
    ("select", {"time_limit": 20}),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_to_online(folder: Path, broker: Broker, fleet: Any) -> Tuple[AgentProcess, float]:
    agent = AgentProcess(folder, broker, device_id=f"bench-{uuid.uuid4().hex[:6]}",
                         settings={"telemetry": {"interval_s": TELEMETRY_S}},
                         env={"EDGE_AGENT_CACHE_DIR": str(folder / "cache")})  # select measures, reusing nothing
    for name in MODELS:
        if not (agent.model_dir / "models" / name).exists():
            shutil.copytree(ROOT / "models" / name, agent.model_dir / "models" / name)
    started = time.monotonic()
    agent.start()
    wait_status(fleet, agent.device_id)
    return agent, time.monotonic() - started


def idle(agent: AgentProcess, seconds: float) -> Tuple[float, float]:
    """(RSS in MB, CPU % of one core) over `seconds` of idling with telemetry on."""
    time.sleep(5.0)  # past start-up (the info probe's child process)
    before, start = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(seconds)
    cpu = (cpu_seconds(agent.pid) - before) / (time.monotonic() - start) * 100
    return agent.rss_kb() / 1024, cpu


def accepted_latency(fleet: Any, device: str, count: int) -> List[float]:
    """Milliseconds from publishing a ping to receiving its `accepted` event, one at a time."""
    fleet.follow(device)
    times = []
    for _ in range(count):
        command = Command(uuid.uuid4().hex, "ping")
        start = time.perf_counter()
        fleet.client.publish(f"edge/{device}/cmd", encode_command(command), qos=1)
        while True:
            _, payload, _ = fleet.received.get(timeout=10)
            message = decode_message(payload)
            if isinstance(message, Event) and message.command_id == command.id and message.event == "accepted":
                times.append((time.perf_counter() - start) * 1000)
                break
    time.sleep(1.0)
    while not fleet.received.empty():
        fleet.received.get()
    return times


def after_jobs(fleet: Any, agent: AgentProcess) -> Tuple[float, List[str]]:
    """(RSS in MB, failures) after every job of JOBS on every model of MODELS, one after the other."""
    device = agent.device_id
    fleet.follow(device)
    failures = []
    for name in MODELS:
        for cmd, args in JOBS:
            command = fleet.send(device, cmd, dict(args, model=f"models/{name}"))
            result = [m for m in fleet.replies(command.id, True, 600, settle_s=0.5) if isinstance(m, Result)]
            if not result or result[0].status != "done":
                failures.append(f"{cmd} {name}: {result[0].code if result else 'no result'}")
    return agent.rss_kb() / 1024, failures


def burst(fleet: Any, device: str, heavy: int = 10, total: int = 200) -> Dict[str, Any]:
    """Publish `total` commands at once; check every answer and the order results came in."""
    kinds = ["bench"] * heavy + [random.choice(CHEAP) for _ in range(total - heavy)]
    random.shuffle(kinds)
    sent = [Command(f"burst-{index:03d}-{kind}", kind, QUICK_BENCH if kind == "bench" else {}) for index, kind in
            enumerate(kinds)]
    fleet.follow(device)
    start = time.monotonic()
    for command in sent:
        fleet.client.publish(f"edge/{device}/cmd", encode_command(command), qos=1)
    results: Dict[str, List[Result]] = {}
    order: List[str] = []
    while len(results) < len(sent) and time.monotonic() - start < 600:
        try:
            _, payload, _ = fleet.received.get(timeout=5)
        except Exception:
            continue
        message = decode_message(payload)
        if isinstance(message, Result) and message.command_id.startswith("burst-"):
            if message.command_id not in results:
                order.append(message.command_id)
            results.setdefault(message.command_id, []).append(message)
    heavy_order = [i for i in order if i.endswith("bench")]
    cheap_done = [order.index(i) for i in order if not i.endswith("bench")]
    second_heavy = order.index(heavy_order[1]) if len(heavy_order) > 1 else len(order)
    return {
        "answered": sum(1 for c in sent if c.id in results), "sent": len(sent),
        "all_done": all(r[0].status == "done" for r in results.values()),
        "copies_identical": all(all(copy == r[0] for copy in r) for r in results.values()),
        "cheap_before_queued_benchmarks": bool(cheap_done) and max(cheap_done) < second_heavy,
        "benchmarks_in_order": heavy_order == [c.id for c in sent if c.cmd == "bench"],
        "seconds": time.monotonic() - start,
    }


def flood(fleet: Any, agent: AgentProcess, count: int, window: int = 200) -> Dict[str, float]:
    """Publish `count` commands the intake rejects (each with a new id, so each is remembered), at most
    `window` unanswered at a time (a broker drops what overflows a session's queue), until every
    `rejected` came back; then read the daemon's RSS and its store's size."""
    fleet.follow(agent.device_id)
    start, seen, sent = time.monotonic(), set(), 0
    while len(seen) < count and time.monotonic() - start < 900:
        while sent < count and sent - len(seen) < window:
            command = Command(f"flood-{sent:05d}", "ping", {"force": True})  # unknown_argument
            fleet.client.publish(f"edge/{agent.device_id}/cmd", encode_command(command), qos=1)
            sent += 1
        try:
            _, payload, _ = fleet.received.get(timeout=5)
        except Exception:
            continue
        message = decode_message(payload)
        if isinstance(message, Event) and message.event == "rejected" and (message.command_id or "").startswith(
                "flood-"):
            seen.add(message.command_id)
    time.sleep(1.0)
    database = Path(agent.workdir / "state" / "agent.db")
    store_mb = sum(path.stat().st_size for path in database.parent.glob("agent.db*")) / 1e6
    return {"rejected": len(seen), "seconds": time.monotonic() - start, "rss_mb": agent.rss_kb() / 1024,
            "store_mb": store_mb}


def soak(count: int) -> int:
    """The fault loops of tests/service/test_daemon_faults.py, `count` runs each."""
    env = dict(os.environ, EDGE_AGENT_SLOW_COUNT=str(count))
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            "tests/service/test_daemon_faults.py"], cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--flood", type=int, default=10_000, help="rejected commands in the flood (default 10,000)")
    parser.add_argument("--soak", type=int, metavar="N", help="run the fault loops N times each instead")
    args = parser.parse_args()
    if args.soak:
        return soak(args.soak)
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as folder, \
            Broker(Path(folder) / "broker", extra_config=BROKER_CONFIG) as broker, coordinator(broker) as fleet:
        agent, online_s = start_to_online(Path(folder) / "agent", broker, fleet)
        rss_mb, cpu = idle(agent, args.idle_seconds)
        latency = accepted_latency(fleet, agent.device_id, args.pings)
        p99 = statistics.quantiles(latency, n=100)[98]
        jobs_rss_mb, failures = after_jobs(fleet, agent)
        loaded = burst(fleet, agent.device_id)
        rss_after_mb = agent.rss_kb() / 1024
        flooded = flood(fleet, agent, args.flood)
        agent.stop()
    rows = [("start -> online (s)", online_s, TARGETS["start_to_online_s"]),
            ("idle RSS (MB)", rss_mb, TARGETS["idle_rss_mb"]),
            ("idle CPU (% of a core)", cpu, TARGETS["idle_cpu_percent"]),
            ("command -> accepted p99 (ms)", p99, TARGETS["accepted_p99_ms"]),
            ("RSS after jobs (MB)", jobs_rss_mb, TARGETS["rss_after_jobs_mb"]),
            (f"RSS after {args.flood} rejected (x before)", flooded["rss_mb"] / rss_after_mb,
             TARGETS["flood_rss_ratio"])]
    print(f"{'target':<32}{'measured':>12}{'limit':>10}{'ratio':>8}  ok")
    for name, value, limit in rows:
        print(f"{name:<32}{value:>12.3f}{limit:>10.3f}{value / limit:>8.2f}  {'yes' if value <= limit else 'NO'}")
    print(f"command -> accepted p50 (ms): {statistics.median(latency):.2f} over {len(latency)} pings")
    print(f"200 at once: {loaded['answered']}/{loaded['sent']} answered in {loaded['seconds']:.1f} s, "
          f"all done: {loaded['all_done']}, copies identical: {loaded['copies_identical']}, cheap before queued "
          f"benchmarks: {loaded['cheap_before_queued_benchmarks']}, benchmarks in order: "
          f"{loaded['benchmarks_in_order']}")
    print(f"RSS: idle {rss_mb:.1f} MB, after {len(JOBS)} job kinds on {', '.join(MODELS)} {jobs_rss_mb:.1f} MB, "
          f"after the burst {rss_after_mb:.1f} MB, after the flood {flooded['rss_mb']:.1f} MB"
          + (f"; jobs not done: {'; '.join(failures)}" if failures else ""))
    print(f"flood: {flooded['rejected']:.0f}/{args.flood} rejected in {flooded['seconds']:.1f} s; the store after it: "
          f"{flooded['store_mb']:.2f} MB")
    ok = all(value <= limit for _, value, limit in rows) and not failures and flooded["rejected"] == args.flood and \
        loaded["answered"] == loaded["sent"] and all(
        loaded[key] for key in ("all_done", "copies_identical", "cheap_before_queued_benchmarks",
                                "benchmarks_in_order"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
