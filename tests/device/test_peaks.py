"""Measured platform ceilings (a real, short measurement), their per-device cache, and the roofline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.device.peaks import Peaks, cached_peaks, roofline, usable_cores

FAKE = Peaks(fingerprint="board-a", fp32_gflops_single=10.0, fp32_gflops_all=40.0, bandwidth_gbs_single=2.0,
             bandwidth_gbs_all=4.0, threads=4, matmul_size=512, copy_bytes=1 << 20, repeats=5)


def test_measures_a_new_device_and_keeps_the_cached_ones(tmp_path: Path) -> None:
    cache = tmp_path / "peaks.json"
    cache.write_text(json.dumps({"board-a": FAKE.to_dict()}))
    measured = cached_peaks("board-b", cache)
    assert measured.fingerprint == "board-b" and measured.threads == usable_cores()
    for value in (measured.fp32_gflops_single, measured.fp32_gflops_all, measured.bandwidth_gbs_single,
                  measured.bandwidth_gbs_all):
        assert value > 0.1
    assert measured.matmul_size in (256, 512, 1024, 2048)
    stored = json.loads(cache.read_text())
    assert set(stored) == {"board-a", "board-b"}
    assert cached_peaks("board-a", cache) == FAKE  # read back, not re-measured
    assert cached_peaks("board-b", cache) == measured


def test_roofline_bound_and_lower_bound_time() -> None:
    ridge = FAKE.fp32_gflops_all / FAKE.bandwidth_gbs_all  # 10 FLOPs per byte
    compute = roofline(flops=4_000_000_000, bytes_moved=1_000_000, peaks=FAKE)
    assert (compute.bound, compute.ridge_intensity) == ("compute", ridge)
    assert compute.lower_bound_ms == pytest.approx(100.0)  # 4e9 FLOPs at 40 GFLOP/s
    memory = roofline(flops=1_000_000, bytes_moved=400_000_000, peaks=FAKE)
    assert memory.bound == "memory" and memory.lower_bound_ms == pytest.approx(100.0)  # 0.4 GB at 4 GB/s
    single = roofline(flops=1_000_000_000, bytes_moved=1, peaks=FAKE, all_threads=False)
    assert single.lower_bound_ms == pytest.approx(100.0) and single.intensity == 1e9
