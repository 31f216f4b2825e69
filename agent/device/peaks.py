"""This board's measured ceilings for the roofline: dense FP32 GFLOP/s and memory bandwidth GB/s.

Compute: numpy matmul (the installed BLAS) in a child process whose BLAS thread count is set through
the environment (OMP/OpenBLAS/MKL/BLIS), once with one thread and once with all usable cores, so the
parent's BLAS state never matters. Bandwidth: a large array copy counted as read + write, on one
thread and on all cores at once, in a third child (the arrays never sit in the caller's memory).
Each figure is the median of repeated runs; the whole measurement takes a few seconds and is cached
per device fingerprint (a string the caller supplies).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from agent import child_env
from agent.errors import WorkerError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
MATMUL_MIN_SECONDS = 0.01   # grow the matrix until one product takes at least this long
MATMUL_MAX_SIZE = 2048
COPY_MAX_BYTES = 128 << 20  # per array; capped to 1/32 of the board's memory
WORKER_TIMEOUT_S = 60.0


@dataclass
class Peaks:
    """Measured ceilings; GFLOP/s are 10^9 FLOP/s (1 MAC = 2 FLOPs), GB/s are 10^9 bytes/s."""

    fingerprint: str
    fp32_gflops_single: float
    fp32_gflops_all: float
    bandwidth_gbs_single: float
    bandwidth_gbs_all: float
    threads: int
    matmul_size: int
    copy_bytes: int
    repeats: int

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> Peaks:
        """The Peaks stored by `to_dict` (a cache entry)."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, object]:
        """JSON form, as cached and reported."""
        return asdict(self)


@dataclass
class Roofline:
    """Where one layer sits on this board's roofline and the least time it can take."""

    bound: str                # "compute" or "memory"
    lower_bound_ms: float
    intensity: Optional[float]
    ridge_intensity: float    # FLOPs/byte where the two ceilings meet


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def matmul_gflops(repeats: int) -> Dict[str, float]:
    """Median FP32 GFLOP/s of n x n matmuls in this process, n grown until one takes long enough."""
    rng = np.random.default_rng(0)
    size = 256
    while True:
        a = rng.random((size, size), dtype=np.float32)
        b = rng.random((size, size), dtype=np.float32)
        np.matmul(a, b)  # warm-up: BLAS thread pool start, page faults
        trial = []
        for _ in range(2):
            start = time.perf_counter()
            np.matmul(a, b)
            trial.append(time.perf_counter() - start)
        if min(trial) >= MATMUL_MIN_SECONDS or size >= MATMUL_MAX_SIZE:
            break
        size *= 2
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b)
        times.append(time.perf_counter() - start)
    return {"gflops": 2.0 * size ** 3 / statistics.median(times) / 1e9, "size": float(size)}


def _in_child(blas_threads: int, *arguments: str) -> Dict[str, float]:
    """Run this module's `main` with `arguments` in a fresh interpreter whose BLAS uses `blas_threads`
    threads: its figures, and none of its numpy work or memory in the caller (the daemon)."""
    env = child_env(**{name: str(blas_threads) for name in THREAD_VARIABLES})
    command = [sys.executable, "-m", "agent.device.peaks", *arguments]
    what = f"{arguments[0]} peak with {blas_threads} threads"
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise WorkerError(f"{what} ran past {WORKER_TIMEOUT_S:.0f} s") from error
    if done.returncode != 0:
        raise WorkerError(f"{what} failed: {done.stderr.strip()[-300:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def copy_bandwidth(threads: int, repeats: int, array_bytes: int) -> float:
    """Median GB/s of copying `array_bytes` (read + write counted), split over `threads` threads."""
    source = np.ones(array_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    chunks = np.array_split(np.arange(source.size), threads)
    bounds = [(int(c[0]), int(c[-1]) + 1) for c in chunks if c.size]

    def copy(bound: Tuple[int, int]) -> None:
        np.copyto(target[bound[0]:bound[1]], source[bound[0]:bound[1]])

    times: List[float] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(copy, bounds))  # warm-up: touch every page
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, bounds))
            times.append(time.perf_counter() - start)
    return 2.0 * source.nbytes / statistics.median(times) / 1e9


def _copy_bytes() -> int:
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(min(COPY_MAX_BYTES, max(memory // 32, 8 << 20)))
    return COPY_MAX_BYTES


def measure_peaks(fingerprint: str, repeats: int = 5) -> Peaks:
    """Measures all four ceilings now (a few seconds); `fingerprint` names the device in the cache."""
    threads = usable_cores()
    single = _in_child(1, "matmul", str(repeats))
    every = _in_child(threads, "matmul", str(repeats))
    array_bytes = _copy_bytes()
    copy = _in_child(threads, "bandwidth", str(repeats), str(array_bytes), str(threads))
    return Peaks(fingerprint=fingerprint, fp32_gflops_single=round(single["gflops"], 3),
                 fp32_gflops_all=round(every["gflops"], 3), bandwidth_gbs_single=round(copy["single"], 3),
                 bandwidth_gbs_all=round(copy["all"], 3), threads=threads, matmul_size=int(every["size"]),
                 copy_bytes=array_bytes, repeats=repeats)


def cached_peaks(fingerprint: str, cache_file: Path, refresh: bool = False) -> Peaks:
    """The peaks cached for `fingerprint` in `cache_file` (JSON), measured and stored when missing."""
    entries: Dict[str, Dict[str, object]] = {}
    if cache_file.is_file():
        try:
            entries = json.loads(cache_file.read_text())
        except ValueError:
            entries = {}  # a damaged cache is re-measured, never fatal
    if not refresh and fingerprint in entries:
        try:
            return Peaks.from_dict(entries[fingerprint])
        except (KeyError, TypeError):
            pass
    peaks = measure_peaks(fingerprint)
    entries[fingerprint] = peaks.to_dict()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(cache_file.name + ".tmp")
    partial.write_text(json.dumps(entries, indent=2, sort_keys=True))
    partial.replace(cache_file)
    return peaks


def roofline(flops: Optional[int], bytes_moved: Optional[int], peaks: Peaks, all_threads: bool = True) -> Roofline:
    """Compute- or memory-bound, and the lower-bound time max(FLOPs / peak, bytes / bandwidth)."""
    gflops = peaks.fp32_gflops_all if all_threads else peaks.fp32_gflops_single
    bandwidth = peaks.bandwidth_gbs_all if all_threads else peaks.bandwidth_gbs_single
    compute_s = (flops or 0) / (gflops * 1e9)
    memory_s = (bytes_moved or 0) / (bandwidth * 1e9)
    intensity = flops / bytes_moved if flops is not None and bytes_moved else None
    return Roofline(bound="compute" if compute_s >= memory_s else "memory",
                    lower_bound_ms=max(compute_s, memory_s) * 1e3, intensity=intensity,
                    ridge_intensity=gflops / bandwidth)


def main(arguments: List[str]) -> Dict[str, float]:
    """`matmul REPEATS` (GFLOP/s at the BLAS threads the environment sets), or `bandwidth REPEATS BYTES
    THREADS` (GB/s on one thread and on THREADS): what `measure_peaks` runs in its children."""
    repeats = int(arguments[1])
    if arguments[0] == "matmul":
        return matmul_gflops(repeats)
    array_bytes, threads = int(arguments[2]), int(arguments[3])
    return {"single": copy_bandwidth(1, repeats, array_bytes), "all": copy_bandwidth(threads, repeats, array_bytes)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
