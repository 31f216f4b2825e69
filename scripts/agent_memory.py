#!/usr/bin/env python3
"""Agent memory at fleet scale: N real agents (`edge-agent run`, 100 by default) on one local Mosquitto, each with
its own state folder; every daemon's RSS (and PSS: shared pages counted once across them) idle once online, and
again after a quick bench sent to each of them (a wave at a time) has finished (its workers gone), against the
figure scripts/simulate_fleet.py gives its boards (`AGENT_RSS_MB`, reported in their telemetry as
`agent_rss_mb`). Stops by itself; exits 1 when the mean RSS after the job is above that figure.

    .venv/bin/python scripts/agent_memory.py                 # 100 agents
    .venv/bin/python scripts/agent_memory.py --agents 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import simulate_fleet  # noqa: E402  (puts the checkout first on sys.path)

sys.path.insert(0, str(ROOT / "tests"))

from support.agent import QUICK_BENCH, AgentProcess, coordinator  # noqa: E402
from support.broker import Broker  # noqa: E402


def memory_mb(pid: int) -> Dict[str, float]:
    """A process's RSS and PSS now (MB)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:"):
            values[parts[0][:-1].lower()] = int(parts[1]) / 1024
    return values


def sample(agents: List[AgentProcess]) -> Dict[str, List[float]]:
    """Every daemon's RSS and PSS."""
    readings = [memory_mb(agent.pid) for agent in agents]
    return {key: [reading[key] for reading in readings] for key in ("rss", "pss")}


def describe(what: str, readings: Dict[str, List[float]]) -> str:
    """One line: mean, max and total RSS, total PSS."""
    rss = readings["rss"]
    return (f"{what:28} RSS mean {statistics.mean(rss):6.1f} MB, max {max(rss):6.1f} MB, total {sum(rss):8.0f} MB;"
            f" PSS total {sum(readings['pss']):7.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--wave", type=int, default=10, help="agents benched at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for one agent's bench")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agent-memory-") as folder, Broker(Path(folder) / "broker") as broker:
        agents: List[AgentProcess] = []
        try:
            with coordinator(broker) as fleet:
                fleet.subscribe("edge/+/status")
                started = time.monotonic()
                for index in range(args.agents):
                    device = f"mem-{index:03d}"
                    agents.append(AgentProcess(Path(folder) / device, broker, device_id=device).start())
                online = set()
                for _, message in fleet.watch(300):
                    if message.KIND == "status" and message.state == "online":
                        online.add(message.device)
                    if len(online) == args.agents:
                        break
                print(f"{len(online)} agents online in {time.monotonic() - started:.0f} s", file=sys.stderr)
                time.sleep(5)
                idle = sample(agents)
                print(describe("idle, online", idle), file=sys.stderr)
                finals = 0
                for first in range(0, args.agents, args.wave):  # a few at a time: each bench has a worker
                    waiting = {fleet.send(agent.device_id, "bench", QUICK_BENCH).id
                               for agent in agents[first:first + args.wave]}
                    for _, message in fleet.watch(args.timeout, events=True):
                        if message.KIND == "result" and message.command_id in waiting:
                            waiting.discard(message.command_id)
                            finals += message.status == "done"
                        if not waiting:
                            break
            time.sleep(5)
            after = sample(agents)
        finally:
            for agent in agents:
                agent.kill()
    predicted = simulate_fleet.AGENT_RSS_MB
    print(f"\n{args.agents} real agents (edge-agent run) on one Mosquitto, this machine (scripts/agent_memory.py)")
    print(describe("idle, online", idle))
    print(describe(f"after a bench ({finals} done)", after))
    mean_after = statistics.mean(after["rss"])
    print(f"simulator's figure per board (simulate_fleet.AGENT_RSS_MB): {predicted:.0f} MB, "
          f"{predicted * args.agents:.0f} MB for {args.agents}; measured mean after the job {mean_after:.1f} MB "
          f"({'within' if mean_after <= predicted else 'ABOVE'})")
    return 0 if mean_after <= predicted and finals == args.agents else 1


if __name__ == "__main__":
    sys.exit(main())
