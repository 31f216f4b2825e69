"""Measured time per layer, joined onto the static profile, and each layer's place on this board's roofline.

The runtime's trace (`trace.py`) times the nodes of the graph it ran; `join.py` says which layers
each node computes. A node's time goes to its head layer; layers the runtime fused into a head have
no time of their own (`measured_ms` null, `fused_into` names the head). A head's roofline figures
are those of its whole group: the FLOPs of every layer in it, and the bytes a fused kernel moves
(what the group reads from outside it and writes for readers outside it). Where the backend has no
per-op timer (TFLite from Python) only the whole-model figures are given. TensorRT's IProfiler times
the engine's layers, joined by their names (`join_tensorrt.py`; unverified on hardware).

Each layer is judged by the ceilings that apply to it (`agent.device.peaks.roofline`): the compute
peak of the runtime that ran it at the layer's own precision (its data input's dtype: int8/uint8 layers
by the int8 peak), and the bandwidth of the innermost memory level its bytes fit in. A layer (or the
whole model) measured faster than that bound carries `peak_under_measured`: the ceiling is too low.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from agent.device.peaks import Peaks, Roofline, roofline
from agent.graph.model import Graph
from agent.profile.join import Join, RuntimeNode, join_by_name, join_runtime
from agent.profile.join_tensorrt import join_tensorrt
from agent.profile.static import Profile


def join_trace(profile: Profile, trace: Dict[str, Any]) -> Join:
    """Joins the trace's nodes onto the profile's layers and sets each head layer's `measured_ms`."""
    graph = trace.get("graph")
    if trace.get("runtime") == "tensorrt":
        join = join_tensorrt(profile.graph, [n["name"] for n in trace["nodes"]])
    elif graph:
        join = join_runtime(profile.graph, [RuntimeNode.from_dict(n) for n in graph["nodes"]],
                            set(graph["constants"]))
    else:
        join = join_by_name(profile.graph, [n["name"] for n in trace["nodes"]])
    times = {n["name"]: n["ms"] for n in trace["nodes"]}
    for index, names in join.nodes_of.items():
        profile.layers[index].measured_ms = round(sum(times.get(name, 0.0) for name in names), 6)
    return join


def group_bytes(graph: Graph, members: Set[int]) -> Optional[int]:
    """Bytes a fused kernel of `members` moves: inputs from outside the group, outputs read outside it."""
    inside = {name for i in members for name in graph.layers[i].outputs if name}
    readers = graph.consumers()
    returned = set(graph.outputs)
    read = {name for i in members for name in graph.layers[i].inputs if name and name not in inside}
    written = {name for name in inside
               if name in returned or any(r not in members for r in readers.get(name, []))}
    tensors = [graph.tensor(name) for name in read | written]
    sizes = [None if tensor is None else tensor.nbytes for tensor in tensors]
    return None if any(s is None for s in sizes) else sum(int(s or 0) for s in sizes)


def precision_of(dtype: str) -> str:
    """The precision whose compute ceiling judges a layer whose data input has `dtype`."""
    return {"int8": "int8", "uint8": "int8", "float16": "fp16"}.get(dtype, "fp32")


def _roof(flops: Optional[int], moved: Optional[int], dtype: str, peaks: Optional[Peaks], threads: int,
          runtime: Optional[str]) -> Optional[Roofline]:
    if peaks is None or flops is None or moved is None:
        return None
    return roofline(flops, moved, peaks, threads > 1, runtime, precision_of(dtype))


def layer_rows(profile: Profile, join: Optional[Join], peaks: Optional[Peaks], threads: int,
               runtime: Optional[str] = None) -> List[Dict[str, Any]]:
    """`profile.layers[]`: the static fields plus the measured and roofline fields (docs/profile.md)."""
    total_ms = sum(c.measured_ms for c in profile.layers if c.measured_ms is not None)
    groups: Dict[int, Set[int]] = {}
    if join is not None:
        for index, head in join.fused_into.items():
            groups.setdefault(head, {head}).add(index)
    folded = set(join.folded) if join else set()
    rows = []
    for index, cost in enumerate(profile.layers):
        row = cost.to_dict()
        members = groups.get(index, {index})
        flops, moved = cost.flops, _moved(cost.bytes_read, cost.bytes_written)
        if len(members) > 1:
            parts = [profile.layers[i].flops for i in members]
            flops = None if any(f is None for f in parts) else sum(int(f or 0) for f in parts)
            moved = group_bytes(profile.graph, members)
        ms = cost.measured_ms
        row.update(group_flops=flops, group_bytes=moved,
                   share=round(ms / total_ms, 6) if ms is not None and total_ms else None,
                   achieved_gflops=_rate(flops, ms), achieved_gbs=_rate(moved, ms),
                   bound=None, lower_bound_ms=None, roof_fraction=None, ceiling=None, peak_under_measured=False,
                   fused_into=profile.layers[join.fused_into[index]].name if join and index in join.fused_into
                   else None,
                   fused_layers=[profile.layers[i].name for i in sorted(members - {index})],
                   runtime_nodes=list(join.nodes_of.get(index, [])) if join else [],
                   folded=index in folded)
        roof = _roof(flops, moved, cost.dtype, peaks, threads, runtime)
        if roof is not None:
            fraction = round(roof.lower_bound_ms / ms, 6) if ms else None
            row.update(bound=roof.bound, lower_bound_ms=round(roof.lower_bound_ms, 9), roof_fraction=fraction,
                       ceiling=roof.ceiling, peak_under_measured=fraction is not None and fraction > 1.0)
        rows.append(row)
    return rows


def _moved(read: Optional[int], written: Optional[int]) -> Optional[int]:
    return None if read is None or written is None else read + written


def _rate(amount: Optional[int], ms: Optional[float]) -> Optional[float]:
    """Per-second rate in units of 10^9 (GFLOP/s, GB/s) of `amount` done in `ms` milliseconds."""
    return round(amount / ms / 1e6, 6) if amount is not None and ms else None


def measured_summary(profile: Profile, join: Optional[Join], trace: Optional[Dict[str, Any]],
                     latency: Optional[Dict[str, Any]], peaks: Optional[Peaks], threads: int,
                     runtime: Optional[str] = None) -> Dict[str, Any]:
    """`profile.measured`: per-layer sums against the whole-model latency, and whole-model figures."""
    totals = profile.totals()
    p50 = latency.get("p50_ms") if latency else None
    roofs = [_roof(c.flops or 0, _moved(c.bytes_read, c.bytes_written) or 0, c.dtype, peaks, threads, runtime)
             for c in profile.layers]
    bounds = [r.lower_bound_ms for r in roofs if r is not None]
    moved = _moved(totals["bytes_read"], totals["bytes_written"])  # type: ignore[arg-type]
    fraction = round(sum(bounds) / p50, 6) if bounds and p50 else None
    whole = {"p50_ms": p50, "achieved_gflops": _rate(totals["flops"], p50),  # type: ignore[arg-type]
             "achieved_gbs": _rate(moved, p50), "lower_bound_ms": round(sum(bounds), 9) if bounds else None,
             "roof_fraction": fraction, "peak_under_measured": fraction is not None and fraction > 1.0}
    summary: Dict[str, Any] = {"available": bool(trace and trace.get("available")), "whole_model": whole}
    if not summary["available"]:
        summary.update(runtime=(trace or {}).get("runtime"), reason=(trace or {}).get(
            "reason", "no per-layer run was made (static profile)"))
        return summary
    assert trace is not None and join is not None
    times = {n["name"]: n for n in trace["nodes"]}
    layers_ms = sum(c.measured_ms for c in profile.layers if c.measured_ms is not None)
    not_joined = [{"node": name, "op": times[name]["op"], "ms": times[name]["ms"]}
                  for name in join.not_joined if name in times]
    nodes_ms = layers_ms + sum(entry["ms"] for entry in not_joined)
    accounted_ms = nodes_ms + (trace.get("call_overhead_ms") or 0.0)
    summary.update(
        runtime=trace["runtime"], runs=trace["runs"], warmup=trace["warmup"], runtime_nodes=len(trace["nodes"]),
        layers_sum_ms=round(layers_ms, 6), nodes_sum_ms=round(nodes_ms, 6),
        call_overhead_ms=trace.get("call_overhead_ms"), accounted_ms=round(accounted_ms, 6),
        whole_model_p50_ms=p50, sum_to_whole_ratio=round(nodes_ms / p50, 4) if p50 else None,
        accounted_to_whole_ratio=round(accounted_ms / p50, 4) if p50 else None,
        profiled_run_p50_ms=trace.get("run_p50_ms"), profiler_cost_ms_per_node=trace.get("profiler_cost_ms_per_node"),
        not_joined=not_joined,
        folded_layers=[profile.layers[i].name for i in join.folded],
        removed_layers=[profile.layers[i].name for i in join.removed],
        joined_by="engine layer names" if trace["runtime"] == "tensorrt" else
        "optimized graph" if trace.get("graph") else "node name")
    if "verified_on_hardware" in trace:
        summary["verified_on_hardware"] = trace["verified_on_hardware"]
    return summary


def runtime_fusions(profile: Profile, join: Optional[Join]) -> Dict[str, Any]:
    """`profile.fusion.runtime`: each head with the layers the runtime fused into it."""
    if join is None:
        return {"count": 0, "groups": []}
    members: Dict[int, List[int]] = {}
    for index, head in sorted(join.fused_into.items()):
        members.setdefault(head, []).append(index)
    groups = [{"head": profile.layers[head].name, "layers": [profile.layers[i].name for i in [head] + fused],
               "ops": [profile.layers[i].op for i in [head] + fused], "runtime_nodes": join.nodes_of.get(head, [])}
              for head, fused in sorted(members.items())]
    return {"count": len(groups), "groups": groups}


def roofline_summary(rows: List[Dict[str, Any]], peaks: Optional[Peaks], threads: int,
                     runtime: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """`profile.roofline`: the ceilings this run is judged by and how many layers each one bounds."""
    if peaks is None:
        return None
    all_threads = threads > 1
    heads = [r for r in rows if r["ceiling"] is not None and r["fused_into"] is None]
    compute = {p.label: p.gflops(all_threads) for p in
               (peaks.compute_roof(runtime, precision_of(r["dtype"])) for r in heads) if p is not None}
    if not compute:
        return None
    memory: List[Dict[str, Any]] = [{"name": m.name, "capacity_bytes": m.capacity(threads if all_threads else 1),
                                     "gbs": m.gbs(all_threads)} for m in peaks.memory]
    by_ceiling: Dict[str, int] = {}
    for row in heads:
        by_ceiling[row["ceiling"]] = by_ceiling.get(row["ceiling"], 0) + 1
    gflops, dram = max(compute.values()), peaks.memory[-1].gbs(all_threads)
    bounds = [r["bound"] for r in heads]
    return {"peaks": peaks.to_dict(), "threads": threads, "ceiling": "all cores" if all_threads else "one core",
            "compute": compute, "memory": memory, "gflops": gflops, "gbs": dram,
            "ridge_intensity": round(gflops / dram, 4), "by_ceiling": by_ceiling, "rechecked": peaks.rechecked,
            "compute_bound_layers": bounds.count("compute"), "memory_bound_layers": bounds.count("memory")}


def profile_section(profile: Profile, trace: Optional[Dict[str, Any]], latency: Optional[Dict[str, Any]],
                    peaks: Optional[Peaks], threads: int, scaling: Optional[Dict[str, Any]] = None,
                    runtime: Optional[str] = None) -> Dict[str, Any]:
    """A report's `profile` section: the static profile, with measured times, roofline and scaling joined;
    `runtime` (the backend that ran) chooses the compute ceilings."""
    join = join_trace(profile, trace) if trace and trace.get("available") else None
    rows = layer_rows(profile, join, peaks, threads, runtime)
    section = profile.to_dict()
    section["layers"] = rows
    section["fusion"]["runtime"] = runtime_fusions(profile, join)  # type: ignore[index]
    section.update(roofline=roofline_summary(rows, peaks, threads, runtime),
                   measured=measured_summary(profile, join, trace, latency, peaks, threads, runtime), scaling=scaling)
    return section
