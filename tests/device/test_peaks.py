"""Measured memory ceilings per cache level (a real, short measurement), the cache levels read from sysfs
(captured board trees), the per-device cache and its format, and the roofline's choice of ceiling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.peaks import compute_peak, fake_peaks

from agent.device.caches import CacheSpec, count_cpus, parse_size, read_caches
from agent.device.peaks import (
    ComputeMeasurement,
    Peaks,
    cached_entry,
    cached_peaks,
    measure_peaks,
    roofline,
    usable_cores,
)
from agent.device.sysfs import SysfsReader

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"


def test_cache_levels_come_from_the_boards_sysfs_without_instruction_caches() -> None:
    assert read_caches(SysfsReader(BOARDS / "raspberry-pi-5")) == [
        CacheSpec(1, 64 << 10, 1), CacheSpec(2, 512 << 10, 1), CacheSpec(3, 2 << 20, 4)]
    assert read_caches(SysfsReader(BOARDS / "raspberry-pi-4")) == []  # no cache folders: DRAM only
    assert (parse_size("32K"), parse_size("1M"), parse_size("512"), parse_size("big"), parse_size(None)) == (
        32768, 1 << 20, 512, None, None)
    assert (count_cpus("0-3,8"), count_cpus("5"), count_cpus("")) == (5, 1, 1)


def test_measures_every_level_of_this_board_and_keeps_the_cached_devices(tmp_path: Path) -> None:
    caches = read_caches(SysfsReader("/"))
    cache = tmp_path / "peaks.json"
    other = fake_peaks("board-a")
    old_format = {"fingerprint": "board-b", "fp32_gflops_single": 1.0, "threads": 2}  # edge-agent before format 2
    cache.write_text(json.dumps({"board-a": other.to_dict(), "board-b": old_format}))
    assert cached_entry("board-b", cache) is None  # an old entry is not read, never fatal
    compute = ComputeMeasurement([compute_peak("onnxruntime", "fp32", 1.0, 2.0)], {"tflite": "its child crashed"})
    measured = cached_peaks("board-b", cache, lambda: measure_peaks("board-b", caches, lambda t, r: compute, 2))
    assert measured.threads == usable_cores() and measured.compute == compute.peaks
    assert measured.unmeasured == {"tflite": "its child crashed"}
    assert [m.name for m in measured.memory] == [f"L{c.level}" for c in caches] + ["DRAM"]
    for level, spec in zip(measured.memory, caches):
        assert level.size_bytes == spec.size_bytes and 0 < level.working_set_bytes <= spec.size_bytes
    for inner, outer in zip(measured.memory, measured.memory[1:]):
        assert inner.gbs_single >= outer.gbs_single > 0 and inner.gbs_all >= inner.gbs_single
    assert set(json.loads(cache.read_text())) == {"board-a", "board-b"}
    assert cached_peaks("board-a", cache, lambda: pytest.fail("re-measured")) == other
    assert Peaks.from_dict(json.loads(json.dumps(measured.to_dict()))) == measured


def test_a_damaged_cache_is_measured_again(tmp_path: Path) -> None:
    cache = tmp_path / "peaks.json"
    cache.write_text("{not json")
    assert cached_peaks("board", cache, fake_peaks) == fake_peaks()
    assert cached_entry("board", cache) == fake_peaks()


def test_compute_bound_layers_are_judged_by_their_runtime_and_precision() -> None:
    peaks = fake_peaks()
    fp32 = roofline(flops=4_000_000_000, bytes_moved=100_000_000, peaks=peaks, runtime="onnxruntime")
    assert (fp32.bound, fp32.ceiling, fp32.lower_bound_ms) == ("compute", "onnxruntime/fp32 compute",
                                                              pytest.approx(100.0))  # 4e9 FLOPs at 40 GFLOP/s
    int8 = roofline(4_000_000_000, 100_000_000, peaks, runtime="onnxruntime", precision="int8")
    assert (int8.ceiling, int8.lower_bound_ms) == ("onnxruntime/int8 compute", pytest.approx(50.0))
    # tflite has no int8 peak here: the highest int8 one judges it, and the ceiling says whose it is
    assert roofline(1, 1, peaks, runtime="tflite", precision="int8").compute == "onnxruntime/int8"
    assert roofline(1, 1, peaks, runtime="tflite", precision="fp16").compute == "tflite/fp32"
    single = roofline(flops=1_000_000_000, bytes_moved=1, peaks=peaks, all_threads=False, runtime="onnxruntime")
    assert single.lower_bound_ms == pytest.approx(100.0) and single.intensity == 1e9
    assert roofline(1, 1, Peaks("board", 4, [], peaks.memory, 5)) is None  # no runtime measured: no roofline


def test_memory_bound_layers_are_judged_by_the_level_their_bytes_fit() -> None:
    peaks = fake_peaks()
    tiny = roofline(flops=1_000, bytes_moved=8_000, peaks=peaks, runtime="onnxruntime")
    assert (tiny.bound, tiny.ceiling, tiny.memory) == ("memory", "L1 bandwidth", "L1")
    assert tiny.lower_bound_ms == pytest.approx(8_000 / 100e9 * 1e3)
    # four cores hold 4 x 32 KiB of L1 and 2 x 1 MiB of L2 together; one core 32 KiB and 1 MiB
    assert roofline(1, 100 << 10, peaks).ceiling == "L1 bandwidth"
    assert roofline(1, 100 << 10, peaks, all_threads=False).ceiling == "L2 bandwidth"
    assert roofline(1, 3 << 20, peaks, all_threads=False).ceiling == "DRAM bandwidth"
    big = roofline(flops=1_000_000, bytes_moved=400_000_000, peaks=peaks)
    assert big.ceiling == "DRAM bandwidth" and big.lower_bound_ms == pytest.approx(100.0)  # 0.4 GB at 4 GB/s
    # no runtime named (a static profile): the highest FP32 peak, tflite's 48 GFLOP/s, over DRAM's 4 GB/s
    assert (big.compute, big.ridge_intensity) == ("tflite/fp32", 12.0)


def test_a_recheck_raises_only_what_it_measured_higher() -> None:
    peaks = fake_peaks()
    faster = compute_peak("onnxruntime", "fp32", 5.0, 60.0)
    l1 = peaks.memory[0]
    raised = peaks.raised([faster], [type(l1)(**dict(l1.__dict__, gbs_single=70.0, gbs_all=90.0))],
                          ["onnxruntime/fp32 compute", "L1 bandwidth"])
    assert (raised.compute[0].gflops_single, raised.compute[0].gflops_all) == (10.0, 60.0)
    assert (raised.memory[0].gbs_single, raised.memory[0].gbs_all) == (70.0, 100.0)
    assert raised.compute[1:] == peaks.compute[1:] and raised.memory[1:] == peaks.memory[1:]
    assert raised.rechecked == ["L1 bandwidth", "onnxruntime/fp32 compute"]
    dram = peaks.memory[-1]
    faster_dram = peaks.raised([], [type(dram)(**dict(dram.__dict__, gbs_all=60.0))], ["DRAM bandwidth"])
    assert [m.gbs_all for m in faster_dram.memory] == [100.0, 60.0, 60.0]  # L2 is never slower than DRAM
    assert peaks == fake_peaks()  # the peaks it was raised from are left as they were
