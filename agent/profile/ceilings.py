"""The roofline's ceilings for this board: measured (runtimes' kernels and every memory level) and re-checked.

`measure` gives a device's `Peaks`: each runtime's GEMM/conv ceilings at FP32 and INT8
(`agent.backends.kernels`) and the copy bandwidth at working sets that fit each cache level of the
live board (`agent.device.caches`) and DRAM. A layer measured faster than its lower bound says the
ceiling that judged it was under-measured: `recheck` measures those ceilings once more with a bigger
problem (a GEMM and conv twice the size; copies timed four times longer) and keeps the higher figures.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Set

from agent.backends.kernels import runtime_peaks
from agent.device.caches import read_caches
from agent.device.peaks import Peaks, measure_memory, measure_peaks
from agent.device.sysfs import SysfsReader

RECHECK_SCALE = 2    # the GEMM's n and the conv's channels, times this
RECHECK_LONGER = 4   # each timed copy lasts this many times longer


def measure(fingerprint: str, reader: SysfsReader) -> Peaks:
    """Every ceiling of the board `reader` reads (its cache levels), measured now (a few seconds)."""
    return measure_peaks(fingerprint, read_caches(reader), lambda threads, repeats: runtime_peaks(threads, repeats))


def over_roof(sections: Sequence[Dict[str, Any]]) -> Set[str]:
    """The ceilings that judged a layer (or a whole model: every ceiling its layers used) faster than its bound."""
    over: Set[str] = set()
    for section in sections:
        rows = [r for r in section.get("layers", []) if r.get("ceiling")]
        over |= {r["ceiling"] for r in rows if (r.get("roof_fraction") or 0) > 1.0}
        if ((section.get("measured") or {}).get("whole_model", {}).get("roof_fraction") or 0) > 1.0:
            over |= {r["ceiling"] for r in rows}
    return over


def recheck(peaks: Peaks, ceilings: Set[str]) -> Peaks:
    """`peaks` with each named ceiling ("onnxruntime/int8 compute", "L2 bandwidth") measured again with a
    bigger problem, raised where the new figure is higher; `rechecked` lists what was."""
    runtimes = sorted({c.split("/")[0] for c in ceilings if c.endswith(" compute")})
    levels = sorted(c[:-len(" bandwidth")] for c in ceilings if c.endswith(" bandwidth"))
    compute = runtime_peaks(peaks.threads, peaks.repeats, RECHECK_SCALE, runtimes).peaks if runtimes else []
    memory = measure_memory(peaks.caches(), peaks.threads, peaks.repeats, RECHECK_LONGER, levels) if levels else []
    return peaks.raised(compute, memory, sorted(ceilings))

