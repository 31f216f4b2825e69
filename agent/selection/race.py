"""The race `edge-agent select` runs: screening, successive halving, the final measurement.

Every measurement is one worker run through `agent.measure.run.measure_configuration`, the same path `bench`
takes (no second latency loop). Screening measures each candidate once with its outputs on the
evaluation split and judges them (`judge`); the admissible ones are raced on latency: each round
keeps the better half by the objective and measures it twice as long, until `FINALISTS` remain or
another round would not leave time for the final one; the finalists are measured like `bench` does
by default (at least 100 calls and 1 s), three times in alternating order, and the best median wins.
One deadline covers it all.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agent.bundle import Bundle
from agent.device.detect import DeviceSection
from agent.errors import UsageError
from agent.measure import accuracy
from agent.measure.latency import Warmup
from agent.measure.plan import Configuration, MeasureRequest
from agent.measure.run import measure_configuration
from agent.selection.decision import Candidate
from agent.selection.request import SelectRequest

OBJECTIVES = {"p50": ("p50_ms", min), "p99": ("p99_ms", min), "throughput": ("throughput_per_s", max)}
FINALISTS = 2
SCREEN_SECONDS = 0.25  # latency of the screening run; each later round doubles it
FINAL_SECONDS = 1.0  # the finalists' full measurement (as `bench` by default)...
FINAL_ROUNDS = 3  # ...repeated, alternating the finalists' order; medians decide
StartHandler = Callable[[int, int, str], None]


def objective_value(candidate: Candidate, objective: str) -> float:
    """The candidate's score, lower is better (throughput is negated)."""
    if objective not in OBJECTIVES:
        raise UsageError(f"objective {objective} is not available: this board reports no power readings "
                         f"edge-agent can read (objectives here: {', '.join(OBJECTIVES)})" if objective == "energy"
                         else f"unknown objective {objective!r} (p50, p99, throughput, energy)")
    field_name, best = OBJECTIVES[objective]
    value = getattr(candidate, field_name)
    if value is None:
        return math.inf
    return value if best is min else -value


def judge(candidate: Candidate, nonfinite: int, reference_top1: Optional[float],
          request: SelectRequest) -> Optional[str]:
    """Why the candidate's outputs reject it (None: admissible): NaN/Inf, a Top-1 drop over the budget,
    or, unlabelled, fidelity to the FP32 reference under the thresholds."""
    if nonfinite:
        return f"produced NaN/Inf on {nonfinite} samples"
    if candidate.top1 is not None and reference_top1 is not None:
        drop = 100.0 * (reference_top1 - candidate.top1)
        if drop > request.budget:
            return (f"Top-1 {100 * candidate.top1:.1f}% is {drop:.1f} points below the FP32 reference's "
                    f"{100 * reference_top1:.1f}% (budget {request.budget:g})")
        return None
    fid = candidate.fidelity
    if fid is None:
        return None  # the reference itself, or a plain file without data (said in its warnings)
    if fid.get("cosine") is None:
        return f"fidelity could not be judged: {fid.get('error', 'no finite outputs')}"
    if fid["cosine"] < request.min_cosine:
        return f"output cosine {fid['cosine']:.4f} to the FP32 reference is under {request.min_cosine:g}"
    agreement = request.settings()["min_agreement"]
    if fid["top1_agreement"] < agreement:
        return (f"top-1 agreement {100 * fid['top1_agreement']:.1f}% with the FP32 reference is under "
                f"{100 * agreement:.1f}%")
    return None


def rejection(report: Any) -> str:
    """The reason a candidate whose measurement failed is rejected: the error's own message (for a model
    TensorRT's parser rejects, the parser's words)."""
    return f"failed: {report.error['message']}" if report.error else "failed"


class Race:
    """One selection run: screening, successive halving, the final measurement, under one deadline."""

    def __init__(self, bundle: Bundle, request: SelectRequest, device: DeviceSection, workdir: Path,
                 on_start: Optional[StartHandler], on_progress: Optional[Any]) -> None:
        self.bundle, self.request, self.device, self.workdir = bundle, request, device, workdir
        self.on_start, self.on_progress = on_start, on_progress
        self.deadline = time.monotonic() + request.time_limit_s
        self.overhead: Dict[int, float] = {}
        self.runs = 0
        self.notes: List[str] = []
        self.reference: Dict[str, Any] = {}

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it passed)."""
        return self.deadline - time.monotonic()

    def measure(self, config: Configuration, candidate: Candidate, seconds: float, iterations: int,
                with_outputs: bool, step: str, of: Tuple[int, int]) -> Tuple[Any, Optional[np.ndarray]]:
        """One worker run of `candidate` (run `of[0]` of `of[1]` in this step); its latency figures are
        copied onto it."""
        self.runs += 1
        if self.on_start:
            self.on_start(of[0], of[1], f"{step} {candidate.label}")
        measure_request = MeasureRequest(
            model=self.request.model, kind="bench", threads=candidate.threads, options=dict(candidate.options),
            warmup=Warmup(3, 0.0), iterations=iterations, min_seconds=seconds, eval_limit=self.request.eval_limit,
            time_limit_s=max(self.remaining(), 1.0), seed=self.request.seed,
            memory_limit_mb=self.request.memory_limit_mb, should_cancel=self.request.should_cancel)
        started = time.monotonic()
        report, outputs = measure_configuration(self.bundle, config, measure_request, self.device,
                                                     self.workdir / f"{self.runs}.npy", self.on_progress, with_outputs)
        self.overhead[id(candidate)] = max(time.monotonic() - started - seconds, 0.0)
        if report.latency:
            candidate.p50_ms, candidate.p99_ms = report.latency["p50_ms"], report.latency["p99_ms"]
            candidate.throughput_per_s = report.latency["throughput_per_s"]
            candidate.iterations = report.latency["iterations"]
            candidate.stability = report.latency["stability"]["verdict"]
            candidate.rounds += 1
        return report, outputs

    def cost(self, survivors: List[Candidate], seconds: float) -> float:
        """Estimated seconds to measure `survivors` for `seconds` each: each one's last run's overhead
        (process start, load, output pass), or the mean overhead so far for one not run yet."""
        usual = sum(self.overhead.values()) / len(self.overhead) if self.overhead else 1.0
        return sum(self.overhead.get(id(c), usual) + seconds for c in survivors)

    def screen(self, pairs: List[Tuple[Configuration, Candidate]]) -> List[Candidate]:
        """Measure each candidate once, outputs included; judge them; return the admissible ones."""
        reference: Optional[Candidate] = None
        reference_outputs: Optional[np.ndarray] = None
        admissible = []
        for index, (config, candidate) in enumerate(pairs):
            if self.cost([candidate], SCREEN_SECONDS) > self.remaining():
                candidate.status = "lost"
                candidate.reason = f"not measured: the time limit ({self.request.time_limit_s:g} s) ran out first"
                continue
            report, outputs = self.measure(config, candidate, SCREEN_SECONDS, 10, True, "screen",
                                           (index + 1, len(pairs)))
            candidate.build = (report.backend.get("configuration") or {}).get("build")
            candidate.warnings += (candidate.build or {}).get("warnings", [])
            if report.status != "ok":
                timed_out = self.remaining() <= 0
                candidate.status = "lost" if timed_out else "rejected"
                candidate.reason = "not finished within the time limit" if timed_out else rejection(report)
                continue
            candidate.top1 = (report.accuracy or {}).get("top1")
            if index == 0 and candidate.precision == "fp32" and not candidate.derived:
                reference, reference_outputs = candidate, outputs
                self.reference = {"label": candidate.label, "top1": candidate.top1}
            elif outputs is not None:
                candidate.fidelity = ({"error": "the FP32 reference run failed"} if reference_outputs is None
                                      else accuracy.fidelity(reference_outputs, outputs))
            elif outputs is None and self.bundle.is_plain_file:
                candidate.warnings.append("accuracy not judged: a plain model file has no evaluation data")
            nonfinite = 0 if outputs is None else int(accuracy.nonfinite_rows(outputs).sum())
            reason = judge(candidate, nonfinite, reference.top1 if reference else None, self.request)
            if reason:
                candidate.status, candidate.reason = "rejected", reason
            else:
                admissible.append(candidate)
        return admissible

    def halve(self, survivors: List[Candidate], by_id: Dict[int, Configuration]) -> List[Candidate]:
        """Successive halving: keep the better half, measure it twice as long, until the finalists remain
        or another round would not leave time for the final one."""
        objective = self.request.objective
        seconds, round_number = SCREEN_SECONDS, 1
        survivors = sorted(survivors, key=lambda c: objective_value(c, objective))
        while len(survivors) > FINALISTS:
            keep = max(FINALISTS, math.ceil(len(survivors) / 2))
            best = survivors[0]
            for loser in survivors[keep:]:
                loser.status = "lost"
                loser.reason = (f"dropped after round {round_number}: {_score(loser, objective)} vs "
                                f"{_score(best, objective)}")
            survivors = survivors[:keep]
            seconds *= 2
            final_cost = FINAL_ROUNDS * self.cost(survivors[:FINALISTS], FINAL_SECONDS)
            if len(survivors) <= FINALISTS or self.cost(survivors, seconds) + final_cost > self.remaining():
                break
            round_number += 1
            for position, candidate in enumerate(survivors, 1):
                self.measure(by_id[id(candidate)], candidate, seconds, 20, False, f"round {round_number}",
                             (position, len(survivors)))
            survivors = sorted(survivors, key=lambda c: objective_value(c, objective))
        return survivors

    def final(self, survivors: List[Candidate], by_id: Dict[int, Configuration]) -> Optional[Candidate]:
        """Measure the finalists fully, `FINAL_ROUNDS` times in alternating order (a shared or throttling
        board then disturbs each of them alike), take the median of each figure, and choose the best."""
        figures: Dict[int, List[Tuple[Optional[float], Optional[float], Optional[float]]]] = {
            id(c): [] for c in survivors}
        for round_index in range(FINAL_ROUNDS):
            for position, candidate in enumerate(survivors if round_index % 2 == 0 else survivors[::-1], 1):
                if self.cost([candidate], FINAL_SECONDS) > self.remaining():
                    continue
                self.measure(by_id[id(candidate)], candidate, FINAL_SECONDS, 100, False, "final",
                             (round_index * len(survivors) + position, FINAL_ROUNDS * len(survivors)))
                figures[id(candidate)].append((candidate.p50_ms, candidate.p99_ms, candidate.throughput_per_s))
        for candidate in survivors:
            runs = figures[id(candidate)]
            if runs:
                candidate.p50_ms, candidate.p99_ms, candidate.throughput_per_s = (
                    float(np.median([run[i] for run in runs])) for i in range(3))
            if len(runs) < FINAL_ROUNDS:
                self.notes.append(f"{candidate.label}: {len(runs)} of {FINAL_ROUNDS} full measurements fitted in "
                                  "the time limit" + ("; its last shorter run's figures are used" if not runs else ""))
        if not survivors:
            return None
        ranked = sorted(survivors, key=lambda c: objective_value(c, self.request.objective))
        for candidate in ranked[1:]:
            candidate.status = "lost"
            candidate.reason = (f"finalist: {_score(candidate, self.request.objective)} vs "
                                f"{_score(ranked[0], self.request.objective)} of the chosen one")
        ranked[0].status = "chosen"
        ranked[0].reason = f"fastest admissible ({_score(ranked[0], self.request.objective)})"
        return ranked[0]


def _score(candidate: Candidate, objective: str) -> str:
    field_name = OBJECTIVES[objective][0]
    value = getattr(candidate, field_name)
    unit = "/s" if objective == "throughput" else " ms"
    return f"{objective} {value:.4g}{unit}" if value is not None else f"{objective} not measured"
