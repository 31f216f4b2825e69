"""Made-up ceilings of a small 4-core board, for tests that must not measure this machine."""

from __future__ import annotations

from agent.device.peaks import ComputePeak, MemoryLevel, Peaks


def compute_peak(runtime: str, precision: str, single: float, every: float) -> ComputePeak:
    """A compute ceiling whose GEMM and conv both reach `single` / `every` GFLOP/s."""
    return ComputePeak(runtime=runtime, version="1.0", precision=precision, gflops_single=single, gflops_all=every,
                       gemm_gflops_single=single, gemm_gflops_all=every, conv_gflops_single=single / 2,
                       conv_gflops_all=every / 2, kernels="made up")


def fake_peaks(fingerprint: str = "board", caches: bool = True, scale: float = 1.0) -> Peaks:
    """onnxruntime fp32 (10 / 40 GFLOP/s on one / four cores) and int8 (20 / 80), tflite fp32 (12 / 48);
    with `caches`, a private 32 KiB L1 (50 / 100 GB/s) and a 1 MiB L2 shared by 2 cores (20 / 40) before
    DRAM (2 / 4); every figure times `scale` (a board no real run can beat)."""
    compute = [compute_peak("onnxruntime", "fp32", 10.0 * scale, 40.0 * scale),
               compute_peak("onnxruntime", "int8", 20.0 * scale, 80.0 * scale),
               compute_peak("tflite", "fp32", 12.0 * scale, 48.0 * scale)]
    levels = [MemoryLevel("L1", 32 << 10, 1, 16 << 10, 50.0 * scale, 100.0 * scale),
              MemoryLevel("L2", 1 << 20, 2, 1 << 18, 20.0 * scale, 40.0 * scale)] if caches else []
    return Peaks(fingerprint=fingerprint, threads=4, compute=compute,
                 memory=levels + [MemoryLevel("DRAM", None, 4, 1 << 25, 2.0 * scale, 4.0 * scale)], repeats=5)
