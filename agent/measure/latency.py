"""The latency loop and its statistics.

Warm-up runs by count and/or seconds; the measured run lasts at least `iterations` calls and at
least `min_seconds` (MLPerf style). Only the runtime's own hot call sits between the two
`perf_counter_ns()` reads, so the figures are the runtime's, not the harness's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import numpy as np

from agent.errors import UsageError

PERCENTILES = (50, 90, 95, 99)


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
    """How long to warm up and how long to measure."""

    warmup: Warmup = Warmup()
    iterations: int = 100
    min_seconds: float = 1.0


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
    clock = time.perf_counter_ns
    times: List[int] = []
    append = times.append
    deadline = clock() + int(min_seconds * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        append(end - start)
        if end >= deadline and len(times) >= iterations:
            return times


def summarize(times_ns: List[int], batch: int = 1) -> Dict[str, Any]:
    """The report's latency figures (milliseconds) from per-call times; throughput counts samples/s."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    summary: Dict[str, Any] = {f"p{p}_ms": _ns(np.percentile(ms, p)) for p in PERCENTILES}
    summary.update({
        "mean_ms": _ns(mean),
        "std_ms": _ns(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "min_ms": _ns(ms.min()),
        "max_ms": _ns(ms.max()),
        "iterations": int(len(ms)),
        "batch": batch,
        "throughput_per_s": round(batch * 1000.0 / mean, 3) if mean > 0 else None,
    })
    return summary


def _ns(milliseconds: float) -> float:
    """Milliseconds rounded to the clock's nanosecond resolution."""
    return round(float(milliseconds), 6)


def time_once(call: Callable[[], Any]) -> float:
    """Milliseconds one call takes (the cold first inference, a model load)."""
    start = time.perf_counter_ns()
    call()
    return _ns((time.perf_counter_ns() - start) / 1e6)
