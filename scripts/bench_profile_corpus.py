#!/usr/bin/env python3
"""The profiler against the corpus of real models: per model, the ops that ran, our dense MACs, the
reference's (ONNX Runtime's profile or the TFLite interpreter's shapes with the textbook formulas,
tests/support/reference_macs.py) and the error. Fetches what the cache lacks first.

    .venv/bin/python scripts/bench_profile_corpus.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    from support.corpus import MODELS, compare, fetch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    args = parser.parse_args()
    worst = 0.0
    if not args.json:
        print(f"{'model':20s} {'ops':>5s} {'our MACs':>14s} {'reference MACs':>15s} {'error':>8s} {'s':>5s}  kind")
    for model in MODELS:
        problem = fetch(model)
        if problem is not None:
            print(f"{model.name:20s} not fetched: {problem}")
            continue
        start = time.perf_counter()
        row = compare(model)
        seconds = time.perf_counter() - start
        worst = max(worst, abs(row.error))
        if args.json:
            print(json.dumps(dict(vars(row), error=round(row.error, 4), seconds=round(seconds, 2))))
        else:
            print(f"{row.model:20s} {row.ops:5d} {row.ours:14,d} {row.reference:15,d} {row.error:+7.3f}% "
                  f"{seconds:5.1f}  {row.kind}")
    if not args.json:
        print(f"worst error {worst:.3f}% (target: within 1%)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
