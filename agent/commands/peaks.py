"""`edge-agent peaks`: this board's measured ceilings for the roofline, cached per device."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(commands: Any) -> None:
    """Add the `peaks` parser."""
    parser = commands.add_parser("peaks", help="this board's FP32 GFLOP/s and memory GB/s (measured once, cached)")
    parser.add_argument("--refresh", action="store_true", help="measure again, replacing the cached figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the cache (measuring when this device has no entry, or with --refresh) and print."""
    from agent.cache import cache_file
    from agent.device.detect import device_section
    from agent.jobs import profile as profile_job

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
    print(f"FP32 GFLOP/s: {peaks.fp32_gflops_single:.3g} on one core, {peaks.fp32_gflops_all:.3g} on "
          f"{peaks.threads} cores (numpy matmul, {peaks.matmul_size}x{peaks.matmul_size})")
    print(f"memory GB/s: {peaks.bandwidth_gbs_single:.3g} on one core, {peaks.bandwidth_gbs_all:.3g} on "
          f"{peaks.threads} cores (copy of {peaks.copy_bytes / 1e6:.0f} MB, read + write)")
    print(f"ridge: {peaks.fp32_gflops_all / peaks.bandwidth_gbs_all:.3g} FLOPs/byte on all cores; "
          f"median of {peaks.repeats} runs; cache {cache_file(profile_job.PEAKS_CACHE)}")
    return 0
