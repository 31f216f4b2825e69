"""The readable form of profile reports: a summary, then the costliest layers and why they cost it here.

Layers are sorted by measured time (static profiles: by MACs); `top` keeps the first N. The `why`
column says where a layer sits on this board's roofline: compute- or memory-bound, the ceiling that
judged it (a runtime/precision's compute peak, or a memory level's bandwidth), and the fraction of
the roofline bound its measured time reaches (100% = as fast as the board allows). A fraction above
100% is never printed bare: it says that the peak was under-measured.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from agent.report import Report, percent, report_runtime

NAME_WIDTH = 44
_COLUMNS = ("layer", "op", "ms", "share", "MACs", "FLOP/B", "GFLOP/s", "GB/s", "why")


def count(value: Optional[float], unit: str = "") -> str:
    """A large count with an SI prefix: 1.23G, 456.8K; `-` for None."""
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{prefix}{unit}"
    return f"{value:.0f}{unit}"


def significant(value: Optional[float], unit: str = "", digits: int = 2) -> str:
    """A count rounded to `digits` significant figures, with an SI prefix: 94K, 380KB, 4.2M; `-` for None."""
    if value is None:
        return "-"
    if value == 0:
        return f"0{unit}"
    rounded = float(f"{value:.{digits}g}")
    scale, prefix = next(((s, p) for s, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")) if abs(rounded) >= s),
                         (1.0, ""))
    mantissa = rounded / scale
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(mantissa)))))
    return f"{mantissa:.{decimals}f}{prefix}{unit}"


def number(value: Optional[float], digits: int = 3) -> str:
    """A measured figure with `digits` significant digits; `-` for None."""
    return "-" if value is None else f"{value:.{digits}g}"


def short(name: str, width: int = NAME_WIDTH) -> str:
    """A long layer name cut in the middle, keeping its start and its end."""
    if len(name) <= width:
        return name
    keep = width - 3
    return name[:keep - keep // 3] + "..." + name[len(name) - keep // 3:]


def why(row: Dict[str, Any]) -> str:
    """Per layer: the bound, how close to it the measured time is, and what was fused into it."""
    if row.get("folded"):
        return "folded into a constant when the model loaded"
    if row.get("fused_into"):
        return f"fused into {short(row['fused_into'], 30)}"
    if row.get("note"):
        return f"not counted: {row['note']}"
    text = f"{row['bound']}-bound ({_ceiling(row['ceiling'])})" if row.get("bound") else \
        "no roofline (run `edge-agent peaks`)"
    if row.get("roof_fraction") is not None:
        text += f", {roof_text(row['roof_fraction'], row.get('peak_under_measured'))}"
    elif row.get("lower_bound_ms") is not None:
        text += f", >= {number(row['lower_bound_ms'])} ms"
    if row.get("fast_algorithms"):
        best = max(row["fast_algorithms"], key=lambda f: f["saved_mults"])
        text += f"; {best['name']} saves {count(best['saved_mults'])} mults"
    if row.get("fused_layers"):
        text += " (+ " + ", ".join(short(n, 24) for n in row["fused_layers"][:3]) + \
            (", ..." if len(row["fused_layers"]) > 3 else "") + ")"
    return text


def roof_text(fraction: float, under_measured: Optional[bool]) -> str:
    """"35.4% of roof", or "112.0% of roof (peak under-measured)" when the bound was beaten."""
    return f"{percent(fraction)} of roof" + (" (peak under-measured)" if under_measured else "")


def _ceiling(ceiling: str) -> str:
    return ceiling[:-len(" compute")] if ceiling.endswith(" compute") else ceiling[:-len(" bandwidth")]


def ordered_layers(section: Dict[str, Any], top: Optional[int]) -> List[Dict[str, Any]]:
    """Layers by measured time when any was measured, else by MACs; the first `top`."""
    rows = section["layers"]
    if any(r.get("measured_ms") is not None for r in rows):
        rows = sorted((r for r in rows if r.get("measured_ms") is not None), key=lambda r: -r["measured_ms"])
    else:
        rows = sorted(rows, key=lambda r: -(r.get("macs") or 0))
    return rows[:top] if top else rows


def layer_table(section: Dict[str, Any], top: Optional[int]) -> List[str]:
    """The per-layer table, aligned."""
    cells = [list(_COLUMNS)]
    for row in ordered_layers(section, top):
        cells.append([short(row["name"]), row["op"], number(row.get("measured_ms")), percent(row.get("share")),
                      count(row.get("macs")), number(row.get("intensity")), number(row.get("achieved_gflops")),
                      number(row.get("achieved_gbs")), why(row)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]


def summary(report: Report) -> List[str]:
    """The lines above the table: what ran, whole-model figures, totals, roofline and scaling."""
    section = report.profile or {}
    backend = report.backend.get("name")
    config = f"{backend} {report_runtime(report)}" if backend else "static profile (not run)"
    lines = [f"profile: {report.model.get('name')} {report.model.get('precision')} ({report.model.get('format')}), "
             f"{config}", f"device: {report.device.info.summary}"]
    if report.status != "ok" and report.error:
        lines.append(f"measurement FAILED: {report.error['message']}")
    if "error" in section:
        lines.append(f"profile FAILED: {section['error']['message']}")
        if report.latency:
            lines.append(f"whole model: p50 {number(report.latency.get('p50_ms'))} ms")
        return lines
    totals, measured = section["totals"], section["measured"]
    lines.append(f"work: {count(totals['macs'])} MACs, {count(totals['flops'])} FLOPs, {count(totals['params'])} "
                 f"params ({count(totals['param_bytes'], 'B')}), peak activations "
                 f"{count(totals['peak_activation_bytes'], 'B')}, {totals['layers']} layers, "
                 f"{totals['layers_not_counted']} not counted, {totals['unknown_ops']} unknown ops")
    lines += control_flow_lines(section.get("control_flow") or [])
    whole = measured["whole_model"]
    if whole.get("p50_ms") is not None:
        lines.append(f"whole model: p50 {number(whole['p50_ms'])} ms, {number(whole['achieved_gflops'])} GFLOP/s, "
                     f"{number(whole['achieved_gbs'])} GB/s"
                     + (f", {roof_text(whole['roof_fraction'], whole.get('peak_under_measured'))}"
                        if whole.get("roof_fraction") is not None else ""))
    stability = (report.latency or {}).get("stability")
    if stability and stability["verdict"] == "unstable":
        lines.append(f"UNSTABLE timed loop: {'; '.join(stability['reasons'])} (docs/report.md, Stability)")
    if measured["available"]:
        lines.append(f"per layer ({measured['runtime']} trace, {measured['runs']} runs): sum "
                     f"{number(measured['nodes_sum_ms'])} ms = {number(measured['sum_to_whole_ratio'])} x the "
                     f"whole-model p50; with the runtime's fixed {number(measured['call_overhead_ms'])} ms per call "
                     f"{number(measured['accounted_to_whole_ratio'])} x; {len(measured['not_joined'])} runtime "
                     f"nodes not joined")
    elif report.backend.get("name"):
        lines.append(f"per layer: not measured ({measured.get('reason')})")
    roof = section.get("roofline")
    if roof:
        compute = ", ".join(f"{label} {number(gflops)} GFLOP/s" for label, gflops in roof["compute"].items())
        memory = ", ".join(f"{m['name']} {number(m['gbs'])} GB/s" + (
            f" (<= {count(m['capacity_bytes'], 'B')})" if m["capacity_bytes"] else "") for m in roof["memory"])
        lines.append(f"roofline ({roof['ceiling']}): {compute}; {memory}; {roof['compute_bound_layers']} layers "
                     f"compute-bound, {roof['memory_bound_layers']} memory-bound")
        if roof["rechecked"]:
            lines.append("re-checked with a bigger problem (a layer beat its bound): " + ", ".join(roof["rechecked"]))
    lines += _fusions(section) + _scaling(section.get("scaling"))
    lines += [f"not counted: {e['count']} {e['op']} layer(s): op not known to the profiler"
              for e in section["unknown_ops"]]
    lines += [f"warning: {text}" for text in section["warnings"]]
    return lines


def _fusions(section: Dict[str, Any]) -> List[str]:
    runtime = section["fusion"].get("runtime") or {}
    if not runtime.get("count"):
        return []
    patterns: Dict[str, int] = {}
    for group in runtime["groups"]:
        key = " + ".join(group["ops"])
        patterns[key] = patterns.get(key, 0) + 1
    return ["runtime fusions: " + ", ".join(f"{k} ({n}x)" for k, n in sorted(patterns.items(), key=lambda p: -p[1]))]


def _scaling(scaling: Optional[Dict[str, Any]]) -> List[str]:
    if not scaling:
        return []
    lines = ["threads: " + "  ".join(f"{n}: {number(t)} ms ({number(s)}x, {percent(e)})" for n, t, s, e in
                                     zip(scaling["threads"], scaling["p50_ms"], scaling["speedup"],
                                         scaling["efficiency"]))]
    fit = scaling.get("amdahl")
    if fit:
        lines.append(f"Amdahl fit: serial fraction {number(fit['serial_fraction'])}, at most "
                     f"{number(fit['max_speedup'])}x with any number of threads")
    return lines


def control_flow_lines(entries: List[Dict[str, Any]]) -> List[str]:
    """One line per If whose branch is known only at run time and whose branches differ in MACs (the
    bound), and per loop body."""
    lines = []
    for entry in entries:
        if entry["mode"] == "both" and len(set(entry["branch_macs"].values())) > 1:
            sizes = ", ".join(f"{branch.split('_')[0]} {count(macs)}" for branch, macs in entry["branch_macs"].items())
            lines.append(f"control flow: {short(entry['layer'], 40)}: both branches counted ({sizes} MACs), "
                         f"the larger ({entry['branch'].split('_')[0]}) in the totals; {short(entry['reason'], 90)}")
        elif entry["mode"] in ("repeated", "per_iteration"):
            trips = f"x {entry['trips']} trips" if entry["trips"] else "once (trip count not known before run time)"
            lines.append(f"control flow: {short(entry['layer'], 40)} body counted {trips}")
    return lines


def render_profiles(reports: Sequence[Report], top: Optional[int]) -> str:
    """Every report: its summary and its layer table, separated by blank lines."""
    blocks = []
    for report in reports:
        lines = summary(report)
        if report.profile and "layers" in report.profile:
            lines += layer_table(report.profile, top)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
