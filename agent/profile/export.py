"""A measured profile's layers in the shape of trtexec's `--exportProfile` JSON, plus the roofline's fields.

`[{"count": N}, {"name", "timeMs", "averageMs", "percentage", ...}, ...]`: N is the number of traced
runs, `averageMs` a layer's time per run (the trace's interquartile mean, profiler cost removed),
`timeMs` = `averageMs` x N, `percentage` its share of the layers' sum; `flops` and `bytes` are what
its kernel did (a head's whole fused group, as the roofline judges it). `medianMs` is left out: the
report keeps each layer's mean, not its runs. Only layers that carry a time (heads) are listed, in
execution order, as trtexec lists its layers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional


def export_profile(section: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """The trtexec-shaped array of a profile section; None when it has no per-layer times."""
    measured = section.get("measured") or {}
    if not measured.get("available"):
        return None
    runs = int(measured["runs"])
    entries: List[Dict[str, Any]] = [{"count": runs}]
    for row in section["layers"]:
        ms = row.get("measured_ms")
        if ms is None:
            continue
        entries.append({
            "name": row["name"], "timeMs": round(ms * runs, 6), "averageMs": ms,
            "percentage": round(100 * (row.get("share") or 0.0), 4), "op_type": row["op"],
            "flops": row["group_flops"], "bytes": row["group_bytes"], "bound": row["bound"],
            "roof_fraction": row["roof_fraction"], "ceiling": row["ceiling"],
            "peak_under_measured": row["peak_under_measured"]})
    return entries

