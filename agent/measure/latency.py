"""The latency loop and its statistics.

Warm-up runs by count and/or seconds; the measured run lasts at least `iterations` calls and at
least `min_seconds` (MLPerf style), split into `rounds` back-to-back rounds whose medians are
compared (agent/measure/stability.py). Only the runtime's own hot call sits between the two
`perf_counter_ns()` reads, so the figures are the runtime's, not the harness's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import numpy as np

from agent.errors import UsageError

PERCENTILES = (50, 90, 95, 99, 99.9)


@dataclass(frozen=True)
class Warmup:
    """At least `count` calls and at least `seconds` of warm-up (either may be zero)."""

    count: int = 10
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Warmup:
        """Parse `--warmup`: `10` (calls), `2s` (seconds) or `10,2s` (both)."""
        count, seconds = 0, 0.0
        for part in text.split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", part)
            if match:
                seconds = float(match.group(1))
            elif part.isdigit():
                count = int(part)
            else:
                raise UsageError(f"--warmup takes a count (10), seconds (2s) or both (10,2s), not {text!r}")
        return cls(count, seconds)


@dataclass(frozen=True)
class LoopPlan:
    """How long to warm up and how long to measure, in how many rounds; `keep_times` sends every timed
    call back (`--export-times`)."""

    warmup: Warmup = Warmup()
    iterations: int = 100
    min_seconds: float = 1.0
    rounds: int = 3
    keep_times: bool = False


@dataclass(frozen=True)
class TimedRound:
    """One round of the timed loop: each call's start and end (`perf_counter_ns`)."""

    starts_ns: List[int]
    ends_ns: List[int]

    @property
    def durations_ns(self) -> List[int]:
        """Nanoseconds per call."""
        return [end - start for start, end in zip(self.starts_ns, self.ends_ns)]


def warm_up(call: Callable[[], Any], warmup: Warmup) -> int:
    """Run `call` until the warm-up's count and duration are both reached; return how many calls ran."""
    done = 0
    deadline = time.perf_counter() + warmup.seconds
    while done < warmup.count or time.perf_counter() < deadline:
        call()
        done += 1
    return done


def measure(call: Callable[[], Any], iterations: int, min_seconds: float) -> List[int]:
    """Time `call` until at least `iterations` calls and `min_seconds` have passed; nanoseconds per call."""
    return measure_rounds(call, iterations, min_seconds, 1)[0].durations_ns


def measure_rounds(call: Callable[[], Any], iterations: int, min_seconds: float, rounds: int) -> List[TimedRound]:
    """Time `call` in `rounds` back-to-back rounds that share the budget: each lasts at least
    iterations/rounds calls (rounded up) and min_seconds/rounds seconds."""
    clock = time.perf_counter_ns
    calls = -(-iterations // rounds)
    budget_ns = int(min_seconds * 1e9 / rounds)
    timed = []
    for _ in range(rounds):
        starts: List[int] = []
        ends: List[int] = []
        started, ended = starts.append, ends.append
        deadline = clock() + budget_ns
        while True:
            start = clock()
            call()
            end = clock()
            started(start)
            ended(end)
            if end >= deadline and len(ends) >= calls:
                break
        timed.append(TimedRound(starts, ends))
    return timed


def summarize(times_ns: List[int], batch: int = 1) -> Dict[str, Any]:
    """The report's latency figures (milliseconds) from per-call times: percentiles (p99.9 as `p99_9_ms`),
    spread (std, `cov` = std / mean) and extremes; throughput counts samples/s."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    summary: Dict[str, Any] = {percentile_key(p): _ns(np.percentile(ms, p)) for p in PERCENTILES}
    summary.update({
        "mean_ms": _ns(mean),
        "std_ms": _ns(std),
        "cov": round(std / mean, 6) if mean > 0 else None,
        "min_ms": _ns(ms.min()),
        "max_ms": _ns(ms.max()),
        "iterations": int(len(ms)),
        "batch": batch,
        "throughput_per_s": round(batch * 1000.0 / mean, 3) if mean > 0 else None,
    })
    return summary


def percentile_key(percentile: float) -> str:
    """The report's name for a percentile: `p50_ms`, `p99_9_ms`."""
    return f"p{percentile:g}_ms".replace(".", "_")


def _ns(milliseconds: float) -> float:
    """Milliseconds rounded to the clock's nanosecond resolution."""
    return round(float(milliseconds), 6)


def time_once(call: Callable[[], Any]) -> float:
    """Milliseconds one call takes (the cold first inference, a model load)."""
    start = time.perf_counter_ns()
    call()
    return _ns((time.perf_counter_ns() - start) / 1e6)
