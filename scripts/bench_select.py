#!/usr/bin/env python3
"""Issue 4's targets, measured side by side on this machine, printed as one table.

1. Selection quality, `--rounds` times on digits and MobileNetV2: `select` (default 60 s limit; the
   first run with a fresh cache), then right after every candidate it did not reject measured fully
   (at least `--seconds` each); the chosen configuration's p50 over the best one's, median of the
   rounds, must be within 5% (1.05).
2. ONNX Runtime INT8 (on-device static QDQ quantization) vs FP32 on MobileNetV2, every core and one
   thread: the p50 speedup (expect >= 1.5x on a CPU with AVX-512 VNNI/AMX); on digits INT8 Top-1
   within 1 point of FP32.
3. `select` on MobileNetV2 finishes inside its time limit (first run: quantization included).

    .venv/bin/python scripts/bench_select.py [--rounds 3] [--seconds 2] [--time-limit 60]

The machine may be shared: the numbers are noisy; selection and full measurement run back to back
and the INT8 speedup alternates configurations round by round, so load disturbs both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def full_p50(model: Path, pairs: List[Tuple[Any, Any]], rounds: int, seconds: float) -> Dict[str, float]:
    """Median p50 (ms) of each (configuration, candidate) over interleaved rounds, through `bench`'s path."""
    from agent.bundle import open_model
    from agent.device.detect import device_section
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest
    from agent.measure.run import measure_configuration

    bundle, device = open_model(model), device_section()
    samples: Dict[str, List[float]] = {candidate.label: [] for _, candidate in pairs}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(rounds):
            for config, candidate in pairs:
                request = MeasureRequest(str(model), threads=candidate.threads, options=dict(candidate.options),
                                              warmup=Warmup(10, 0.2), iterations=100, min_seconds=seconds)
                report, _ = measure_configuration(bundle, config, request, device,
                                                       Path(workdir) / f"{round_index}.npy", with_outputs=False)
                if report.latency:
                    samples[candidate.label].append(report.latency["p50_ms"])
    return {label: statistics.median(values) for label, values in samples.items() if values}


def selection_quality(model: Path, time_limit: float, rounds: int, seconds: float) -> Dict[str, Any]:
    """`rounds` times: select on `model` (measured again), then measure every candidate it did not reject
    fully, right after; the ratio of the chosen one's p50 to the best one's, per round."""
    from agent.bundle import open_model
    from agent.device.detect import device_section
    from agent.jobs.select import select
    from agent.selection.candidates import candidates
    from agent.selection.request import SelectRequest

    results = []
    for _ in range(rounds):
        started = time.monotonic()
        decision = select(SelectRequest(str(model), time_limit_s=time_limit, refresh=True), device_section())
        elapsed = time.monotonic() - started
        verdicts = {c.label: c.status for c in decision.candidates}
        pairs = [(config, c) for config, c in candidates(open_model(model), SelectRequest(str(model)))
                 if config is not None and verdicts.get(c.label) in ("chosen", "lost")]
        p50 = full_p50(model, pairs, 1, seconds)
        choice = decision.choice
        best = min(p50, key=p50.get)
        results.append({"elapsed_s": elapsed, "choice": choice.label if choice else None, "best": best,
                        "ratio": p50[choice.label] / p50[best] if choice else float("inf"),
                        "chosen_p50": p50.get(choice.label) if choice else None, "best_p50": p50[best],
                        "admissible": len(pairs)})
    return {"rounds": results, "ratio": statistics.median(r["ratio"] for r in results),
            "elapsed_s": max(r["elapsed_s"] for r in results)}


def int8_speedup(model: Path, rounds: int, seconds: float) -> Dict[int, Tuple[float, float, float]]:
    """ONNX Runtime FP32 and on-device INT8 p50 on `model` and their ratio, per thread count (all, one)."""
    from agent.bundle import open_model
    from agent.measure.plan import MeasureRequest, default_threads, plan
    from agent.selection.decision import Candidate

    bundle = open_model(model)
    configs = plan(bundle, MeasureRequest(str(model), backends=["onnxruntime"], derive=True))
    pairs = [(config, Candidate("onnxruntime", config.precision, threads, {"provider": "CPUExecutionProvider"}))
             for threads in sorted({default_threads(), 1}, reverse=True) for config in configs]
    p50 = full_p50(model, pairs, rounds, seconds)
    result = {}
    for threads in sorted({default_threads(), 1}, reverse=True):
        fp32 = p50[f"onnxruntime/fp32 ({threads} thr, provider=CPUExecutionProvider)"]
        int8 = p50[f"onnxruntime/int8 ({threads} thr, provider=CPUExecutionProvider)"]
        result[threads] = (fp32, int8, fp32 / int8)
    return result


def int8_top1(model: Path) -> Dict[str, float]:
    """Top-1 of ONNX Runtime FP32 and on-device INT8 on the evaluation split (`eval --derive`)."""
    from agent.device.detect import device_section
    from agent.jobs.measure import run_measure
    from agent.measure.plan import MeasureRequest

    request = MeasureRequest(str(model), kind="eval", backends=["onnxruntime"], derive=True)
    return {r.model["precision"]: r.accuracy["top1"] for r in run_measure(request, device_section())}


def main() -> int:
    """Measure and print the table; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    os.environ["EDGE_AGENT_CACHE_DIR"] = tempfile.mkdtemp(prefix="edge-agent-bench-select-")  # first runs
    models = ROOT / "models"
    rows: List[Tuple[str, str, str, bool]] = []
    for name in ("digits", "mobilenet_v2"):
        quality = selection_quality(models / name, args.time_limit, args.rounds, args.seconds)
        picks = "; ".join(f"{r['choice']} {r['chosen_p50']:.4g} ms vs {r['best']} {r['best_p50']:.4g} ms"
                          for r in quality["rounds"])
        rows.append((f"{name}: chosen p50 / best admissible p50 (<= 1.05, median of {args.rounds})",
                     f"{picks} ({quality['rounds'][0]['admissible']} admissible)", f"{quality['ratio']:.3f}",
                     quality["ratio"] <= 1.05))
        first = quality["rounds"][0]["elapsed_s"]
        rows.append((f"{name}: select time (<= limit {args.time_limit:g} s; first run, fresh cache)",
                     f"{first:.1f} s (slowest run {quality['elapsed_s']:.1f} s)",
                     f"{quality['elapsed_s'] / args.time_limit:.2f} of limit", quality["elapsed_s"] <= args.time_limit))
    speed = int8_speedup(models / "mobilenet_v2", args.rounds, args.seconds)
    for threads, (fp32, int8, ratio) in speed.items():
        rows.append((f"mobilenet_v2: ORT INT8 vs FP32, {threads} thr (expect >= 1.5x)",
                     f"{fp32:.3f} ms -> {int8:.3f} ms", f"{ratio:.2f}x", ratio >= 1.5))
    digits = int8_top1(models / "digits")
    drop = 100 * (digits["fp32"] - digits["int8"])
    rows.append(("digits: ORT INT8 Top-1 within 1 point of FP32", f"{100 * digits['fp32']:.1f}% -> "
                 f"{100 * digits['int8']:.1f}%", f"{drop:+.1f} points", drop <= 1.0))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(("target", "measured", "ratio"), width)) + "  ok")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], width)) + ("  yes" if row[3] else "  NO"))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
