"""`edge-agent peaks`: this board's measured ceilings for the roofline, cached per device."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(commands: Any) -> None:
    """Add the `peaks` parser."""
    parser = commands.add_parser(
        "peaks", help="this board's GFLOP/s per runtime/precision and GB/s per memory level (measured once, cached)")
    parser.add_argument("--refresh", action="store_true", help="measure again, replacing the cached figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the cache (measuring when this device has no entry, or with --refresh) and print."""
    from agent.cache import cache_file
    from agent.device.detect import device_section
    from agent.jobs import profile as profile_job
    from agent.profile.render import count

    device = device_section()
    cached = None if args.refresh else profile_job.device_peaks(device.fingerprint, measure=False)
    peaks = cached or profile_job.device_peaks(device.fingerprint, refresh=args.refresh)
    assert peaks is not None
    source = "cached" if cached else "measured now"
    if args.json:
        print(json.dumps(dict(peaks.to_dict(), source=source, cache=str(cache_file(profile_job.PEAKS_CACHE))),
                         indent=2))
        return 0
    print(f"device: {device.info.summary} (fingerprint {peaks.fingerprint}), {source}")
    print(f"compute GFLOP/s, one core / {peaks.threads} cores (best of a GEMM and a conv, each runtime's own kernels):")
    for peak in peaks.compute:
        print(f"  {peak.label:<18} {peak.gflops_single:8.3g} / {peak.gflops_all:<8.3g} "
              f"{peak.runtime} {peak.version}: {peak.kernels}")
    for runtime, reason in peaks.unmeasured.items():
        print(f"  {runtime}: not measured ({reason}); its layers are judged by another runtime's peak")
    if not peaks.compute and not peaks.unmeasured:
        print("  none: no runtime (onnxruntime, ai-edge-litert / tflite-runtime) is installed")
    print(f"memory GB/s, one core / {peaks.threads} cores (copy, read + write, at a working set that fits):")
    for level in peaks.memory:
        size = f"{count(level.size_bytes, 'B')}, shared by {level.shared_cpus}" if level.size_bytes else "main memory"
        print(f"  {level.name:<5} {level.gbs_single:8.3g} / {level.gbs_all:<8.3g} ({size}; "
              f"{count(level.working_set_bytes, 'B')} per thread)")
    rechecked = f"; re-checked: {', '.join(peaks.rechecked)}" if peaks.rechecked else ""
    print(f"best of {peaks.repeats} runs{rechecked}; cache {cache_file(profile_job.PEAKS_CACHE)}")
    return 0
