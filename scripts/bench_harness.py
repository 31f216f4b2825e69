#!/usr/bin/env python3
"""Harness overhead: the p50 edge-agent reports versus a bare loop of the runtime's own run call.

For each model and backend, in one run, rounds alternate between `edge-agent bench` (a worker process,
our loop around `Session.bind`) and a bare loop in a fresh process that calls the runtime directly
(`InferenceSession.run(None, feed)` or `Interpreter.invoke()`) with the same threads and input.
The ratio of the medians of the rounds' p50s is the harness overhead. Targets: <= 1.03 on digits,
<= 1.01 on MobileNetV2.

    .venv/bin/python scripts/bench_harness.py [--rounds 5] [--seconds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = (("digits", "onnxruntime", "model.fp32.onnx", 1.03), ("digits", "tflite", "model.fp32.tflite", 1.03),
         ("mobilenet_v2", "onnxruntime", "model.fp32.onnx", 1.01),
         ("mobilenet_v2", "tflite", "model.fp32.tflite", 1.01))


def bare_loop(model: str, backend: str, threads: int, seconds: float) -> float:
    """p50 in ms of the runtime's own call in a tight loop, on the bundle's first evaluation sample."""
    import numpy as np

    from agent.bundle import open_model

    bundle = open_model(Path(model).parent, verify=False)
    x, _ = bundle.evaluation.load(1)
    feed = bundle.preprocessing.apply(x, bundle.inputs[0].layout)
    if backend == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: feed}

        def call() -> Any:
            return session.run(None, feeds)
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=model, num_threads=threads)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
        call = interpreter.invoke
    for _ in range(10):
        call()
    clock, times = time.perf_counter_ns, []
    deadline = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        times.append(end - start)
        if end >= deadline and len(times) >= 100:
            return float(np.percentile(np.asarray(times) / 1e6, 50))


def ours(model_dir: Path, backend: str, threads: int, seconds: float) -> float:
    """p50 in ms as `edge-agent bench` reports it for the bundle's FP32 model with `backend`."""
    from agent.device.detect import device_section
    from agent.jobs.measure import run_measure
    from agent.measure.plan import MeasureRequest

    request = MeasureRequest(model=str(model_dir), backends=[backend], precisions=["fp32"], threads=threads,
                                  min_seconds=seconds, eval_limit=1)
    (report,) = run_measure(request, device_section())
    return report.latency["p50_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--bare", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(bare_loop(args.bare[0], args.bare[1], args.threads, args.seconds)))
        return 0
    rows: List[Dict[str, Any]] = []
    for name, backend, filename, target in CASES:
        model_dir = ROOT / "models" / name
        ours_p50, bare_p50 = [], []
        for _ in range(args.rounds):
            ours_p50.append(ours(model_dir, backend, args.threads, args.seconds))
            bare = subprocess.run([sys.executable, __file__, "--bare", str(model_dir / filename), backend,
                                   "--threads", str(args.threads), "--seconds", str(args.seconds)],
                                  check=True, capture_output=True, text=True)
            bare_p50.append(json.loads(bare.stdout.strip().splitlines()[-1]))
        ratio = statistics.median(ours_p50) / statistics.median(bare_p50)
        rows.append({"model": name, "backend": backend, "ours": statistics.median(ours_p50),
                     "bare": statistics.median(bare_p50), "ratio": ratio, "target": target})
    print(f"harness overhead, {args.rounds} alternating rounds of {args.seconds:g} s, {args.threads} threads")
    print(f"{'model':<14}{'backend':<13}{'ours p50 ms':>12}{'bare p50 ms':>12}{'ratio':>8}{'target':>8}  ok")
    for row in rows:
        ok = "yes" if row["ratio"] <= row["target"] else "NO"
        print(f"{row['model']:<14}{row['backend']:<13}{row['ours']:>12.4f}{row['bare']:>12.4f}"
              f"{row['ratio']:>8.3f}{row['target']:>8.2f}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
