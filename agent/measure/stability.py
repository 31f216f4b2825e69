"""Whether a timed loop can be trusted: its spread, its rounds, and what the machine did meanwhile.

The rule (docs/report.md, "Stability"): a loop is **unstable** when any of these holds, each named in
`reasons`:
- its coefficient of variation (std / mean) over windows of at least `WINDOW_MS` of calls exceeds
  `MAX_COV` (calls shorter than the window are grouped, so a 60 us model is judged by the variation of
  its throughput, not by the scheduler's tick landing in one call);
- the medians of its rounds disagree: (max - min) / overall median above `MAX_ROUND_SPREAD`;
- other processes used more than `MAX_OTHER_CPU_CORES` cores' worth of CPU time during it, or a
  hypervisor stole more than `MAX_STEAL_FRACTION` of the CPUs (judged on loops of at least
  `MIN_JUDGED_SECONDS`, the kernel counts CPU time in ticks);
- the 1-minute load average exceeded the online CPU count plus the run's own threads before or after it
  (the average lags by a minute, so this run's threads and those of the configurations measured just
  before it count towards it: only load beyond them is someone else's);
- the clocks changed under it: throttle flags, a mean clock that fell by more than 10% of the maximum,
  a lowered cap (agent/device/telemetry.py), or a changed cpufreq governor.
Otherwise it is **stable**, or **unknown** when it ran fewer than `MIN_CALLS` calls (too few to judge).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from agent.device.telemetry import LoadSnapshot, ThermalSnapshot, throttle_report

MAX_COV = 0.10
WINDOW_MS = 10.0
MAX_ROUND_SPREAD = 0.05
MAX_OTHER_CPU_CORES = 0.25
MAX_STEAL_FRACTION = 0.05
MIN_JUDGED_SECONDS = 0.5
MIN_CALLS = 30


@dataclass(frozen=True)
class LoopEnvironment:
    """The machine around one timed loop: clocks, temperatures and load just before and just after it, and
    the CPU time this process spent in it (user + system, all its threads), and the runtime threads it ran."""

    thermal_before: ThermalSnapshot
    thermal_after: ThermalSnapshot
    load_before: LoadSnapshot
    load_after: LoadSnapshot
    own_cpu_s: float
    online_cpus: int
    threads: int = 1

    @property
    def elapsed_s(self) -> float:
        return (self.load_after.monotonic_ns - self.load_before.monotonic_ns) / 1e9

    def other_cpu_cores(self) -> Optional[float]:
        """Cores' worth of CPU time the rest of the machine used during the loop (None without /proc/stat)."""
        before, after = self.load_before.busy_s, self.load_after.busy_s
        if before is None or after is None or self.elapsed_s <= 0:
            return None
        return round(max(0.0, after - before - self.own_cpu_s) / self.elapsed_s, 3)

    def steal_fraction(self) -> Optional[float]:
        """The share of all CPUs' time a hypervisor took during the loop (None without /proc/stat)."""
        before, after = self.load_before.steal_s, self.load_after.steal_s
        if before is None or after is None or self.elapsed_s <= 0:
            return None
        return round(max(0.0, after - before) / (self.elapsed_s * self.online_cpus), 4)

    def to_dict(self) -> Dict[str, Any]:
        """`latency.environment`: governor, clocks, temperature and load average before and after (null:
        the board does not expose it), and what the rest of the machine used meanwhile."""
        return {"before": _moment(self.thermal_before, self.load_before),
                "after": _moment(self.thermal_after, self.load_after),
                "elapsed_s": round(self.elapsed_s, 6), "online_cpus": self.online_cpus, "threads": self.threads,
                "own_cpu_s": round(self.own_cpu_s, 6), "other_cpu_cores": self.other_cpu_cores(),
                "steal_fraction": self.steal_fraction()}


def _moment(thermal: ThermalSnapshot, load: LoadSnapshot) -> Dict[str, Any]:
    return {"governor": thermal.governor(), "cpu_freq_mhz": thermal.mean_cur_mhz(),
            "cpu_max_mhz": thermal.mean_max_mhz(), "temperature_c": thermal.max_temp_c(),
            "load_average": None if load.load_average is None else list(load.load_average)}


@dataclass(frozen=True)
class Stability:
    """The verdict on one timed loop (`latency.stability`): stable, unstable or unknown, why, and the
    figures it was judged by."""

    verdict: str
    reasons: List[str]
    cov_judged: Optional[float]
    window_calls: int
    round_p50_ms: List[float]
    round_spread: Optional[float]

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as the report carries it."""
        return {"verdict": self.verdict, "reasons": self.reasons, "cov_judged": self.cov_judged,
                "window_calls": self.window_calls, "round_p50_ms": self.round_p50_ms,
                "round_spread": self.round_spread}


def online_cpus() -> int:
    """CPUs online on this machine (what the load average is compared with)."""
    return os.cpu_count() or 1


def judge(rounds_ns: List[List[int]], environment: LoopEnvironment) -> Stability:
    """Apply the module's rule to the per-call times of each round and the loop's environment."""
    times = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ns]) / 1e6
    median = float(np.median(times))
    window = max(1, math.ceil(WINDOW_MS / median)) if median > 0 else 1
    windows = times[:len(times) // window * window].reshape(-1, window).mean(axis=1)
    cov = float(windows.std(ddof=1) / windows.mean()) if len(windows) > 1 and windows.mean() > 0 else None
    medians = [round(float(np.median(r)) / 1e6, 6) for r in rounds_ns]
    spread = (max(medians) - min(medians)) / median if len(medians) > 1 and median > 0 else None
    reasons = []
    if cov is not None and len(windows) >= 10 and cov > MAX_COV:
        reasons.append(f"CoV {cov:.1%} over {window}-call windows > {MAX_COV:.0%}")
    if spread is not None and min(len(r) for r in rounds_ns) >= 10 and spread > MAX_ROUND_SPREAD:
        reasons.append(f"rounds' medians differ by {spread:.1%} > {MAX_ROUND_SPREAD:.0%} "
                       f"({', '.join(f'{m:.4g}' for m in medians)} ms)")
    reasons += _environment_reasons(environment)
    verdict = "unstable" if reasons else "stable" if len(times) >= MIN_CALLS else "unknown"
    return Stability(verdict, reasons, None if cov is None else round(cov, 6), window, medians,
                     None if spread is None else round(spread, 6))


def _environment_reasons(environment: LoopEnvironment) -> List[str]:
    """What the machine did that makes the loop's figures doubtful."""
    reasons = []
    if environment.elapsed_s >= MIN_JUDGED_SECONDS:
        other, steal = environment.other_cpu_cores(), environment.steal_fraction()
        if other is not None and other > MAX_OTHER_CPU_CORES:
            reasons.append(f"other processes used {other:.2f} cores during the loop (> {MAX_OTHER_CPU_CORES})")
        if steal is not None and steal > MAX_STEAL_FRACTION:
            reasons.append(f"the hypervisor stole {steal:.1%} of the CPUs (> {MAX_STEAL_FRACTION:.0%})")
    ceiling = environment.online_cpus + environment.threads
    for when, load in (("before", environment.load_before), ("after", environment.load_after)):
        if load.load_average is not None and load.load_average[0] > ceiling:
            reasons.append(f"load average {load.load_average[0]:.2f} {when} the loop is above the "
                           f"{environment.online_cpus} online CPUs + its own {environment.threads}")
    governors = (environment.thermal_before.governor(), environment.thermal_after.governor())
    if governors[0] != governors[1]:
        reasons.append(f"cpufreq governor changed {governors[0]} -> {governors[1]}")
    throttle = throttle_report(environment.thermal_before, environment.thermal_after)
    return reasons + list(throttle["throttle_reasons"])
