#!/usr/bin/env python3
"""Measured per-layer time against the whole-model latency: the sum must land within 10%.

For each bundled model (ONNX file, ONNX Runtime) and thread count, runs `edge-agent profile`'s job:
the whole-model p50 measured the normal way (a session without the profiler) and the per-layer times
from ONNX Runtime's trace (the profiler's own cost per node taken off), then prints their ratio side
by side: the per-layer sum alone, and with the runtime's fixed cost per call added (measured on a
one-node model; it matters for tiny models only). The verdict is on the second. With --scaling it
also prints the thread sweep and the Amdahl fit; the board's peaks come from the cache (`edge-agent
peaks`). Timings on a shared machine are noisy: run it on a quiet board.

    .venv/bin/python scripts/bench_profile_measured.py [--threads 1,2] [--runs 300] [--scaling]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOLERANCE = 0.10
MODELS = ("digits", "mobilenet_v2")


def main() -> int:
    """Profiles each model at each thread count; exit 1 when a ratio is outside 1 +- 10%."""
    from agent.device.detect import device_section
    from agent.jobs import profile as profile_job
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest, default_threads
    from agent.profile.scaling import thread_counts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=None, help="thread counts, e.g. 1,2 (default: 1 and every core)")
    parser.add_argument("--runs", type=int, default=300, help="timed and traced runs per configuration")
    parser.add_argument("--scaling", action="store_true", help="also sweep 1..N threads and fit Amdahl's law")
    options = parser.parse_args()
    cores = default_threads()
    counts = [int(t) for t in options.threads.split(",")] if options.threads else sorted({1, cores})
    device = device_section()
    peaks = profile_job.device_peaks(device.fingerprint)
    assert peaks is not None
    roof = peaks.compute_roof("onnxruntime", "fp32")
    dram = peaks.memory[-1]
    print(f"device: {device.info.summary}; peaks: "
          + (f"{roof.label} {roof.gflops_single:.3g}/{roof.gflops_all:.3g} GFLOP/s" if roof else "no compute peak")
          + f" (1/{peaks.threads} cores), DRAM {dram.gbs_single:.3g}/{dram.gbs_all:.3g} GB/s")
    print(f"{'model':14} {'thr':>3} {'whole p50 ms':>12} {'layer sum ms':>12} {'ratio':>6} {'+call ms':>8} "
          f"{'ratio':>6} {'traced run ms':>13} {'cost/node us':>12} {'nodes':>5}  verdict")
    failed = False
    for model in MODELS:
        for count in counts:
            request = MeasureRequest(model=str(ROOT / "models" / model), kind="profile", backends=["onnxruntime"],
                                          threads=count, warmup=Warmup(20, 0.5), iterations=options.runs,
                                          min_seconds=1.0, eval_limit=1)
            (report,) = profile_job.run_profile(profile_job.ProfileRequest(request), device)
            measured = report.profile["measured"]
            ratio = measured["accounted_to_whole_ratio"]
            verdict = "ok" if abs(ratio - 1) <= TOLERANCE else "OUTSIDE 10%"
            failed |= verdict != "ok"
            print(f"{model:14} {count:>3} {measured['whole_model_p50_ms']:>12.4f} {measured['nodes_sum_ms']:>12.4f} "
                  f"{measured['sum_to_whole_ratio']:>6.3f} {measured['call_overhead_ms']:>8.4f} {ratio:>6.3f} "
                  f"{measured['profiled_run_p50_ms']:>13.4f} "
                  f"{1e3 * measured['profiler_cost_ms_per_node']:>12.2f} {measured['runtime_nodes']:>5}  {verdict}")
        if options.scaling:
            request = MeasureRequest(model=str(ROOT / "models" / model), backends=["onnxruntime"],
                                          iterations=options.runs, min_seconds=1.0)
            for label, scaling in profile_job.sweep(request, device, thread_counts(cores)).items():
                fit = scaling["amdahl"] or {}
                print(f"  {label} threads {scaling['threads']}: p50 {scaling['p50_ms']} ms, speed-up "
                      f"{scaling['speedup']}, efficiency {scaling['efficiency']}; Amdahl serial fraction "
                      f"{fit.get('serial_fraction')}, max speed-up {fit.get('max_speedup')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
