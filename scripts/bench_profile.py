#!/usr/bin/env python3
"""Static-profile speed: ResNet-50 v1.5 as a ~100 MB ONNX file, profiled in a fresh process.

Builds the model with tests/nets.py (random float32 weights, no download) into a temporary folder,
then times `static_profile` in a new Python process, imports included (cold), and again within that
process (warm, median of the repeats). Target: cold <= 2 s on the development machine.

    .venv/bin/python scripts/bench_profile.py [--repeats 5] [--model resnet50|mobilenet_v2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_S = 2.0
# Runs in the fresh process: the first call pays for every import, the rest are warm.
TIMED = """
import json, statistics, sys, time
start = time.perf_counter()
from agent.profile.static import static_profile
profile = static_profile(sys.argv[1])
cold = time.perf_counter() - start
warm = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    static_profile(sys.argv[1])
    warm.append(time.perf_counter() - start)
totals = profile.totals()
print(json.dumps({"cold_s": cold, "warm_s": statistics.median(warm), "macs": totals["macs"],
                  "params": totals["params"], "layers": totals["layers"]}))
"""


def main() -> int:
    """Builds the model, times the profile, prints the figures; exit 1 when over the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=("resnet50", "mobilenet_v2"), default="resnet50")
    options = parser.parse_args()
    import onnx
    from support.nets import mobilenet_v2, resnet50_v15

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{options.model}.onnx"
        onnx.save(resnet50_v15() if options.model == "resnet50" else mobilenet_v2(), str(path))
        size_mb = path.stat().st_size / 1e6
        done = subprocess.run([sys.executable, "-c", TIMED, str(path), str(options.repeats)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout)
    verdict = "ok" if result["cold_s"] <= TARGET_S else "OVER TARGET"
    print(f"{options.model}: {size_mb:.1f} MB, {result['layers']} layers, {result['macs']:,} MACs, "
          f"{result['params']:,} params")
    print(f"static profile: cold {result['cold_s']:.3f} s (imports included), "
          f"warm {result['warm_s']:.3f} s (median of {options.repeats}); target <= {TARGET_S:.1f} s: {verdict}")
    return 0 if result["cold_s"] <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
