"""This board's measured ceilings for the roofline: compute per runtime and precision, bandwidth per memory level.

Compute ceilings are measured with each runtime's own kernels (`agent.backends.kernels`, above this
layer, hands them in as `ComputePeak`s). Bandwidth is measured here: numpy copies over arrays sized to
half of each data cache level (sysfs, `agent.device.caches`) and a large one for DRAM, counted as read
+ write, on one thread and on all usable cores at once (each thread its own arrays), in a child
process so the arrays never sit in the caller's memory (the daemon). A small array is copied over and
over in one numpy call (a view that repeats it), so the timing is not Python's call overhead. Each
figure is the best of repeated runs (a ceiling is what the board can reach); the whole takes a few
seconds and is cached per device fingerprint. Entries of an older cache format are measured again.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from agent import child_env
from agent.device.caches import CacheSpec
from agent.errors import WorkerError

FORMAT = 2                  # the cache entry's layout; entries of another format are re-measured
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
DRAM_MAX_BYTES = 128 << 20  # the DRAM working set; capped to 1/16 of the board's memory
COPY_MIN_SECONDS = 0.01     # one timed copy (repeating a small array) lasts at least this long
WORKER_TIMEOUT_S = 60.0


@dataclass
class ComputePeak:
    """One runtime's dense GFLOP/s at one precision (10^9 FLOP/s, 1 MAC = 2 FLOPs): the best of a
    GEMM and a conv on one thread and on all usable cores."""

    runtime: str
    version: str
    precision: str
    gflops_single: float
    gflops_all: float
    gemm_gflops_single: float
    gemm_gflops_all: float
    conv_gflops_single: float
    conv_gflops_all: float
    kernels: str              # what was timed, e.g. "MatMul 512x512x512, Conv 3x3 128->128 at 56x56"

    @property
    def label(self) -> str:
        """`runtime/precision`, as a layer's `ceiling` names it."""
        return f"{self.runtime}/{self.precision}"

    def gflops(self, all_threads: bool) -> float:
        """The ceiling on all cores or on one."""
        return self.gflops_all if all_threads else self.gflops_single


@dataclass
class ComputeMeasurement:
    """What measuring the runtimes' kernels gave: their peaks, and why any runtime has none."""

    peaks: List[ComputePeak]
    unmeasured: Dict[str, str]   # runtime -> the failure (its kernels crashed or were refused)


@dataclass
class MemoryLevel:
    """Copy bandwidth (GB/s = 10^9 bytes/s, read + write) at a working set that fits one level."""

    name: str                      # "L1", "L2", "L3", "DRAM"
    size_bytes: Optional[int]      # one instance's size; None for DRAM
    shared_cpus: int               # CPUs sharing one instance
    working_set_bytes: int         # per thread, source + target
    gbs_single: float
    gbs_all: float

    def gbs(self, all_threads: bool) -> float:
        """The ceiling on all cores or on one."""
        return self.gbs_all if all_threads else self.gbs_single

    def capacity(self, threads: int) -> Optional[int]:
        """Bytes `threads` cores hold in this level together (every instance they use); None for DRAM."""
        if self.size_bytes is None:
            return None
        return self.size_bytes * math.ceil(threads / self.shared_cpus)


@dataclass
class Peaks:
    """Measured ceilings of one device: `compute` per runtime/precision, `memory` from L1 out to DRAM."""

    fingerprint: str
    threads: int
    compute: List[ComputePeak]
    memory: List[MemoryLevel]
    repeats: int
    format: int = FORMAT
    rechecked: List[str] = field(default_factory=list)  # ceilings measured again with a bigger problem
    unmeasured: Dict[str, str] = field(default_factory=dict)  # runtime -> why it has no compute peak

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Peaks:
        """The Peaks stored by `to_dict` (a cache entry); ValueError for another format."""
        if data.get("format") != FORMAT:
            raise ValueError(f"peaks cache format {data.get('format')}, not {FORMAT}")
        return cls(fingerprint=data["fingerprint"], threads=data["threads"], repeats=data["repeats"],
                   compute=[ComputePeak(**c) for c in data["compute"]],
                   memory=[MemoryLevel(**m) for m in data["memory"]], rechecked=list(data.get("rechecked", [])),
                   unmeasured=dict(data.get("unmeasured", {})))

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as cached and reported."""
        return asdict(self)

    def caches(self) -> List[CacheSpec]:
        """The cache levels these peaks were measured on (DRAM left out)."""
        return [CacheSpec(int(m.name[1:]), m.size_bytes, m.shared_cpus) for m in self.memory if m.size_bytes]

    def compute_roof(self, runtime: Optional[str], precision: str) -> Optional[ComputePeak]:
        """The runtime's own ceiling at `precision`; else the highest at that precision on any runtime;
        else the runtime's FP32 one, else the highest FP32 (the chosen peak's label says which)."""
        for wanted in (precision, "fp32"):
            exact = [c for c in self.compute if c.precision == wanted and c.runtime == runtime]
            others = [c for c in self.compute if c.precision == wanted]
            if exact or others:
                return max(exact or others, key=lambda c: c.gflops_all)
        return None

    def memory_level(self, working_set: Optional[int], all_threads: bool) -> MemoryLevel:
        """The innermost level that holds `working_set` bytes (on the cores the run uses), else DRAM."""
        threads = self.threads if all_threads else 1
        for level in self.memory:
            capacity = level.capacity(threads)
            if capacity is not None and working_set is not None and working_set <= capacity:
                return level
        return self.memory[-1]

    def raised(self, compute: Sequence[ComputePeak], memory: Sequence[MemoryLevel], names: Sequence[str]) -> Peaks:
        """These peaks with each re-measured figure raised to the higher of the two measurements."""
        def best(old: Any, new: Any, keys: Sequence[str]) -> Any:
            return replace(old, **{k: max(getattr(old, k), getattr(new, k)) for k in keys} if new else {})

        new_compute = {c.label: c for c in compute}
        new_memory = {m.name: m for m in memory}
        rates = ("gflops_single", "gflops_all", "gemm_gflops_single", "gemm_gflops_all", "conv_gflops_single",
                 "conv_gflops_all")
        return replace(self, compute=[best(c, new_compute.get(c.label), rates) for c in self.compute],
                       memory=monotone([best(m, new_memory.get(m.name), ("gbs_single", "gbs_all"))
                                        for m in self.memory]),
                       rechecked=sorted(set(self.rechecked) | set(names)))


@dataclass
class Roofline:
    """Where one layer sits on this board's roofline, the least time it can take, and which ceiling says so."""

    bound: str                # "compute" or "memory"
    lower_bound_ms: float
    intensity: Optional[float]
    ridge_intensity: float    # FLOPs/byte where the compute ceiling meets this level's bandwidth
    ceiling: str              # "onnxruntime/int8 compute", "L2 bandwidth", "DRAM bandwidth"
    compute: str              # the compute peak's label
    memory: str               # the memory level's name


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def roofline(flops: Optional[int], bytes_moved: Optional[int], peaks: Peaks, all_threads: bool = True,
             runtime: Optional[str] = None, precision: str = "fp32") -> Optional[Roofline]:
    """Compute- or memory-bound, and the lower-bound time max(FLOPs / compute peak, bytes / bandwidth of
    the level that holds the bytes); None when the peaks hold no compute ceiling."""
    peak = peaks.compute_roof(runtime, precision)
    if peak is None:
        return None
    level = peaks.memory_level(bytes_moved, all_threads)
    gflops, bandwidth = peak.gflops(all_threads), level.gbs(all_threads)
    compute_s = (flops or 0) / (gflops * 1e9)
    memory_s = (bytes_moved or 0) / (bandwidth * 1e9)
    bound = "compute" if compute_s >= memory_s else "memory"
    return Roofline(bound=bound, lower_bound_ms=max(compute_s, memory_s) * 1e3,
                    intensity=flops / bytes_moved if flops is not None and bytes_moved else None,
                    ridge_intensity=gflops / bandwidth,
                    ceiling=f"{peak.label} compute" if bound == "compute" else f"{level.name} bandwidth",
                    compute=peak.label, memory=level.name)


def run_module(module: str, arguments: Sequence[str], what: str, threads: int = 1) -> Any:
    """Run `python -m module arguments` in a fresh interpreter (BLAS/OpenMP at `threads` threads) and
    return the JSON of its last output line: its figures, and none of its memory in the caller."""
    env = child_env(**{name: str(threads) for name in THREAD_VARIABLES})
    try:
        done = subprocess.run([sys.executable, "-m", module, *arguments], env=env, capture_output=True, text=True,
                              timeout=WORKER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise WorkerError(f"{what} ran past {WORKER_TIMEOUT_S:.0f} s") from error
    if done.returncode != 0:
        raise WorkerError(f"{what} failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def copy_bandwidth(working_set: int, threads: int, repeats: int, min_seconds: float = COPY_MIN_SECONDS) -> float:
    """Best GB/s of copying, on each of `threads` threads, its own `working_set` bytes (source + target),
    the copy repeated inside one numpy call until one call lasts `min_seconds`."""
    count = max(working_set // 16, 1)
    arrays = [(np.ones(count), np.zeros(count)) for _ in range(threads)]
    passes = 1

    def copy(pair: Any) -> None:
        np.copyto(as_strided(pair[1], (passes, count), (0, 8)), as_strided(pair[0], (passes, count), (0, 8)))

    def timed(pool: ThreadPoolExecutor) -> float:
        start = time.perf_counter()
        list(pool.map(copy, arrays))
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=threads) as pool:
        seconds = timed(pool)  # touches every page, starts the threads
        while seconds < min_seconds:
            passes = passes * 2 if seconds <= 0 else math.ceil(passes * min_seconds * 1.2 / seconds)
            seconds = timed(pool)
        best = min(timed(pool) for _ in range(repeats))
    return 2.0 * 8 * count * passes * threads / best / 1e9


def dram_bytes() -> int:
    """The DRAM working set: `DRAM_MAX_BYTES`, at most 1/16 of this board's memory."""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(min(DRAM_MAX_BYTES, max(memory // 16, 8 << 20)))
    return DRAM_MAX_BYTES


def level_plan(caches: Sequence[CacheSpec], threads: int) -> List[Dict[str, Any]]:
    """Each level's name, size, sharing and per-thread working set: half of what the threads hold in it
    together, split between them; DRAM last, with `dram_bytes()` split the same way."""
    plan = [{"name": f"L{c.level}", "size_bytes": c.size_bytes, "shared_cpus": c.shared_cpus,
             "working_set_bytes": c.size_bytes * math.ceil(threads / c.shared_cpus) // 2 // threads}
            for c in caches]
    plan.append({"name": "DRAM", "size_bytes": None, "shared_cpus": threads,
                 "working_set_bytes": dram_bytes() // threads})
    return plan


def measure_memory(caches: Sequence[CacheSpec], threads: int, repeats: int, longer: int = 1,
                   only: Optional[Sequence[str]] = None) -> List[MemoryLevel]:
    """Every level's bandwidth (or those in `only`), in a child process; `longer` multiplies the timed time.
    One thread gets the per-thread working set that all threads each get. A level is never slower than
    the next level out (a noisy run of L3 below DRAM is DRAM's figure)."""
    plan = [p for p in level_plan(caches, threads) if only is None or p["name"] in only]
    if not plan:
        return []
    rates = run_module("agent.device.peaks", ["memory", str(repeats), str(threads), str(longer),
                                              json.dumps([p["working_set_bytes"] for p in plan])],
                       f"bandwidth with {threads} threads")
    levels = [MemoryLevel(gbs_single=round(single, 3), gbs_all=round(every, 3), **p)
              for p, (single, every) in zip(plan, rates)]
    return monotone(levels)


def monotone(levels: List[MemoryLevel]) -> List[MemoryLevel]:
    """`levels` (L1 out to DRAM) with each never slower than the next level out: what that level can feed,
    this one can (a noisy run of L3 below DRAM takes DRAM's figure)."""
    for inner, outer in reversed(list(zip(levels, levels[1:]))):
        inner.gbs_single, inner.gbs_all = max(inner.gbs_single, outer.gbs_single), max(inner.gbs_all, outer.gbs_all)
    return levels


def measure_peaks(fingerprint: str, caches: Sequence[CacheSpec],
                  compute: Callable[[int, int], ComputeMeasurement], repeats: int = 5) -> Peaks:
    """Measures every ceiling now (a few seconds): `compute(threads, repeats)` gives the runtimes' own."""
    threads = usable_cores()
    kernels = compute(threads, repeats)
    return Peaks(fingerprint=fingerprint, threads=threads, compute=kernels.peaks,
                 memory=measure_memory(caches, threads, repeats), repeats=repeats, unmeasured=kernels.unmeasured)


def read_cache(cache_file: Path) -> Dict[str, Any]:
    """Every entry of the peaks cache file; {} when it is missing or damaged."""
    try:
        entries = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def cached_entry(fingerprint: str, cache_file: Path) -> Optional[Peaks]:
    """This device's cached peaks; None when missing, damaged or of an older format."""
    try:
        return Peaks.from_dict(read_cache(cache_file)[fingerprint])
    except (KeyError, TypeError, ValueError):
        return None


def store_peaks(peaks: Peaks, cache_file: Path) -> None:
    """Writes `peaks` as its device's entry, keeping the other devices' (atomically)."""
    entries = read_cache(cache_file)
    entries[peaks.fingerprint] = peaks.to_dict()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(cache_file.name + ".tmp")
    partial.write_text(json.dumps(entries, indent=2, sort_keys=True))
    partial.replace(cache_file)


def cached_peaks(fingerprint: str, cache_file: Path, measure: Callable[[], Peaks], refresh: bool = False) -> Peaks:
    """The peaks cached for `fingerprint` in `cache_file` (JSON); `measure()` and stored when missing."""
    cached = None if refresh else cached_entry(fingerprint, cache_file)
    if cached is not None:
        return cached
    peaks = measure()
    store_peaks(peaks, cache_file)
    return peaks


def main(arguments: List[str]) -> List[List[float]]:
    """`memory REPEATS THREADS LONGER [WORKING_SETS...]` (JSON list): per working set, GB/s on one thread
    and on THREADS (never below one thread's): what `measure_memory` runs in its child."""
    repeats, threads, longer = int(arguments[1]), int(arguments[2]), int(arguments[3])
    seconds = COPY_MIN_SECONDS * longer
    rates = []
    for size in json.loads(arguments[4]):
        single = copy_bandwidth(size, 1, repeats, seconds)
        rates.append([single, max(single, copy_bandwidth(size, threads, repeats, seconds))])
    return rates


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
