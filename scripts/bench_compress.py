#!/usr/bin/env python3
"""Issue 15's sweep, measured side by side on this machine: low-rank factorisation (Tucker-2 for k x k convs,
SVD for 1 x 1 convs and FC layers) at several kept energies, each point against its original, in one run.

Per model, batch and energy: the layers factorised, Top-1 (labelled bundles), the parameter compression
(original / factorised), the MACs left (factorised / original) and the measured speed-up (original p50 /
factorised p50, ONNX Runtime FP32, the median over `--rounds` rounds that alternate the models, so load on
a shared machine disturbs both sides alike).

    .venv/bin/python scripts/bench_compress.py [--rounds 3] [--seconds 0.5] [--models digits,mobilenet_v2]
                                               [--conv tucker2|spatial]

digits is measured at batch 1 and 64 (per-call overhead against work), the bundled MobileNetV2 (random
weights: a flat spectrum, depthwise convs skipped) at batch 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLANS = {"digits": ((0.3, 0.5, 0.7, 0.9, 0.95, 0.99), (1, 64)), "mobilenet_v2": ((0.5, 0.7, 0.9), (1,))}


def points(model: Path, energies: Sequence[float], folder: Path, conv: str) -> List[Dict[str, Any]]:
    """One factorised bundle per energy (`compress lowrank --energy E --conv CONV`), with its per-layer document."""
    from agent.compress.ranks import RankRule, at_energy
    from agent.jobs.compress import LowRankRequest, analyse, factorise, lowrank_document

    request = LowRankRequest(str(model), RankRule(), conv=conv)
    source, found, skipped = analyse(request)
    written = []
    for energy in energies:
        path, results = factorise(source, at_energy(found, energy), folder / f"energy-{energy:g}", "bench")
        written.append(lowrank_document(request, source, skipped, results, energy, path))
    return written


def measure(models: List[str], batch: int, rounds: int, seconds: float) -> Dict[str, Tuple[float, Any]]:
    """Median p50 (ms) of each model over `rounds` rounds that alternate them, and its Top-1."""
    from agent.device.detect import device_section
    from agent.jobs.measure import run_measure
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest

    device = device_section()
    samples: Dict[str, List[float]] = {m: [] for m in models}
    top1: Dict[str, Any] = {}
    for _ in range(rounds):
        for model in models:
            request = MeasureRequest(model, backends=["onnxruntime"], precisions=["fp32"], batch=[batch],
                                     warmup=Warmup(10, 0.1), iterations=50, min_seconds=seconds, rounds=1)
            report = run_measure(request, device)[0]
            samples[model].append(report.latency["p50_ms"])
            top1[model] = (report.accuracy or {}).get("top1")
    return {m: (statistics.median(v), top1[m]) for m, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum seconds of each timed loop")
    parser.add_argument("--models", default=",".join(PLANS), help="bundled models to sweep")
    parser.add_argument("--conv", default="tucker2", choices=("tucker2", "spatial"), help="the form of k x k convs")
    args = parser.parse_args()
    from agent.device.detect import device_section

    print(f"device: {device_section().info.summary}; ONNX Runtime FP32, default threads, median of "
          f"{args.rounds} alternating rounds; k x k convs: {args.conv}")
    header = ["model", "batch", "energy", "layers", "top-1", "params", "compression", "MACs left", "p50 ms",
              "orig ms", "speed-up"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as work:
        for name in args.models.split(","):
            energies, batches = PLANS[name]
            model = ROOT / "models" / name
            written = points(model, energies, Path(work) / name, args.conv)
            for batch in batches:
                timed = measure([str(model)] + [p["output"] for p in written], batch, args.rounds, args.seconds)
                base_ms, base_top1 = timed[str(model)]
                rows.append([name, str(batch), "original", "-", _pct(base_top1), "-", "1.00x", "100.0%",
                             f"{base_ms:.4g}", f"{base_ms:.4g}", "1.00x"])
                for point in written:
                    ms, top1 = timed[point["output"]]
                    totals = point["totals"]
                    rows.append([name, str(batch), f"{point['energy']:g}",
                                 str(sum(1 for layer in point["layers"] if layer["ranks"])), _pct(top1),
                                 f"{totals['after']['params']:,}", f"{totals['param_compression']:.2f}x",
                                 f"{100 * totals['macs_ratio']:.1f}%", f"{ms:.4g}", f"{base_ms:.4g}",
                                 f"{base_ms / ms:.2f}x"])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
