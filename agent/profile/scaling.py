"""Measured parallelism: speed-up and efficiency over thread counts, and Amdahl's law fitted to them.

The latencies come from ordinary `bench` runs at each thread count (`agent/jobs/profile.py`).
Amdahl's law says T(n) = T1 · (s + (1 − s) / n) for a serial fraction s. Written as T(n) = a + b / n
with a = T1 · s and b = T1 · (1 − s), it is linear in a and b, which are fitted by least squares over
the measured p50 latencies (constrained to a, b ≥ 0); then s = a / (a + b) and the largest speed-up
any number of threads could give is 1 / s. With two thread counts the fit passes through both points.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

# Beyond this many cores the sweep takes powers of two (and the core count itself).
EVERY_COUNT_UP_TO = 8


def thread_counts(cores: int) -> List[int]:
    """1..cores on small boards; 1, 2, 4, ... and `cores` itself on larger ones."""
    if cores <= EVERY_COUNT_UP_TO:
        return list(range(1, cores + 1))
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return counts + [cores]


def amdahl_fit(threads: Sequence[int], latency_ms: Sequence[float]) -> Optional[Dict[str, Any]]:
    """The serial fraction fitted to T(n) = a + b / n (least squares, a, b ≥ 0); None below two counts."""
    points = [(1.0 / n, t) for n, t in zip(threads, latency_ms) if t is not None]
    if len({x for x, _ in points}) < 2:
        return None
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_t = sum(t for _, t in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (t - mean_t) for x, t in points) / spread
    a = mean_t - b * mean_x
    if b < 0:  # latency grows with threads: all of it behaves as serial
        a, b = mean_t, 0.0
    elif a < 0:  # better than linear: no serial part
        a, b = 0.0, sum(x * t for x, t in points) / sum(x * x for x, _ in points)
    residual = (sum((a + b * x - t) ** 2 for x, t in points) / count) ** 0.5
    serial = a / (a + b) if a + b > 0 else 1.0
    return {"serial_fraction": round(serial, 4), "parallel_fraction": round(1 - serial, 4),
            "t1_ms": round(a + b, 6), "max_speedup": round(1 / serial, 3) if serial > 0 else None,
            "rms_residual_ms": round(residual, 6), "points": count}


def scaling_section(threads: Sequence[int], latency_ms: Sequence[Optional[float]]) -> Dict[str, Any]:
    """`profile.scaling` of one configuration: p50 per thread count, speed-up, efficiency, the fit."""
    base = latency_ms[0] if latency_ms and threads[0] == 1 else None
    speedup = [round(base / t, 4) if base and t else None for t in latency_ms]
    efficiency = [round(s / n, 4) if s is not None else None for s, n in zip(speedup, threads)]
    measured = [(n, t) for n, t in zip(threads, latency_ms) if t is not None]
    return {"threads": list(threads), "p50_ms": list(latency_ms), "speedup": speedup, "efficiency": efficiency,
            "amdahl": amdahl_fit([n for n, _ in measured], [t for _, t in measured])}
