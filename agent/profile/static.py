"""The static profile of a model file: per-layer costs, totals, memory, parallelism and fusions.

`static_profile(path)` is what `edge-agent profile` shows before anything runs; measured per-layer
times (`LayerCost.measured_ms`) are joined onto its layers later by the measuring code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from agent.graph.model import BUFFER, PARAM_ROLES, Graph
from agent.graph.read import read_graph
from agent.profile.costs import LayerCost, layer_cost
from agent.profile.fusion import FusionReport, find_fusions
from agent.profile.memory import PeakMemory, peak_activation
from agent.profile.parallelism import Parallelism, static_parallelism

SUMMED = ("macs", "flops", "mults", "bytes_read", "bytes_written")


@dataclass
class Profile:
    """Everything the static profiler found about one model."""

    graph: Graph
    layers: List[LayerCost]
    memory: PeakMemory
    parallelism: Parallelism
    fusion: FusionReport

    def not_counted(self) -> List[Dict[str, object]]:
        """Layers whose work is not in the totals, each with the reason."""
        return [{"layer": c.name, "op": c.op, "reason": c.note} for c in self.layers if c.note]

    def unknown_ops(self) -> List[Dict[str, object]]:
        """Op types the profiler does not know, with the layers that use them."""
        by_op: Dict[str, List[str]] = {}
        for cost in self.layers:
            if cost.kind == "unknown":
                by_op.setdefault(cost.op, []).append(cost.name)
        return [{"op": op, "count": len(names), "layers": names} for op, names in sorted(by_op.items())]

    def constants(self) -> Tuple[Dict[str, Dict[str, int]], int, int]:
        """Parameters by dtype ({dtype: {"params", "bytes"}}), buffer elements and bytes; each
        constant tensor counts once, however many layers read it."""
        params: Dict[str, Dict[str, int]] = {}
        buffers, buffer_bytes, seen = 0, 0, set()
        for layer in self.graph.layers:
            for name, role in zip(layer.inputs, self.graph.roles(layer)):
                tensor = self.graph.tensor(name)
                if tensor is None or name in seen or (role not in PARAM_ROLES and role != BUFFER):
                    continue
                seen.add(name)
                if role == BUFFER:
                    buffers, buffer_bytes = buffers + (tensor.elements or 0), buffer_bytes + (tensor.nbytes or 0)
                    continue
                entry = params.setdefault(tensor.dtype, {"params": 0, "bytes": 0})
                entry["params"] += tensor.elements or 0
                entry["bytes"] += tensor.nbytes or 0
        return params, buffers, buffer_bytes

    def branch_bounds(self) -> Tuple[Dict[str, Dict[str, int]], Set[int]]:
        """MACs of each branch of every If whose branches were both kept ({If: {branch: MACs}}), and the
        indices of the layers of the smaller branches, which the totals leave out (the larger is the
        bound). Inner Ifs are settled first, so an outer branch counts only its inner bound."""
        by_branch: Dict[str, Dict[str, int]] = {}
        excluded: Set[int] = set()
        depth = {layer.name: len(layer.branches) for layer in self.graph.layers}
        both = [e.layer for e in self.graph.control_flow if e.mode == "both"]
        for name in sorted(both, key=lambda n: -depth.get(n, 0)):
            sums: Dict[str, Tuple[int, int]] = {"then_branch": (0, 0), "else_branch": (0, 0)}
            for index, (layer, cost) in enumerate(zip(self.graph.layers, self.layers)):
                for outer, branch in layer.branches:
                    if outer == name and index not in excluded and branch in sums:
                        macs, flops = sums[branch]
                        sums[branch] = (macs + (cost.macs or 0), flops + (cost.flops or 0))
            larger = max(sums, key=lambda b: sums[b])
            by_branch[name] = {branch: macs for branch, (macs, _) in sums.items()}
            excluded.update(i for i, layer in enumerate(self.graph.layers)
                            if any(outer == name and branch != larger for outer, branch in layer.branches))
        return by_branch, excluded

    def control_flow(self) -> List[Dict[str, object]]:
        """What the reader did with each If, Loop and Scan, with each kept branch's MACs and the bound."""
        by_branch, _ = self.branch_bounds()
        rows = []
        for entry in self.graph.control_flow:
            row = entry.to_dict()
            if entry.layer in by_branch:
                row["branch_macs"] = by_branch[entry.layer]
                row["branch"] = max(by_branch[entry.layer], key=lambda b: by_branch[entry.layer][b])
            rows.append(row)
        return rows

    def totals(self) -> Dict[str, object]:
        """Sums over the layers that could be counted (the larger branch of an unresolved If), constants
        once, the peak and the counts."""
        _, excluded = self.branch_bounds()
        counted = [c for i, c in enumerate(self.layers) if i not in excluded]
        sums = {key: sum(getattr(c, key) or 0 for c in counted) for key in SUMMED}
        moved = sums["bytes_read"] + sums["bytes_written"]
        params, buffers, buffer_bytes = self.constants()
        times = [c.measured_ms for c in self.layers if c.measured_ms is not None]
        return dict(sums, params=sum(e["params"] for e in params.values()),
                    param_bytes=sum(e["bytes"] for e in params.values()), params_by_dtype=params,
                    buffers=buffers, buffer_bytes=buffer_bytes,
                    intensity=round(sums["flops"] / moved, 4) if moved else None,
                    peak_activation_bytes=self.memory.peak_bytes, layers=len(self.layers),
                    layers_not_counted=sum(1 for c in self.layers if c.note),
                    unknown_ops=sum(1 for c in self.layers if c.kind == "unknown"),
                    fast_algorithm_saved_mults=sum(max(int(f["saved_mults"]) for f in c.fast_algorithms)  # type: ignore[call-overload]
                                                   for c in counted if c.fast_algorithms),
                    measured_ms=sum(times) if times else None)

    def to_dict(self) -> Dict[str, object]:
        """The JSON form that goes into a report's `profile` section."""
        return {"model": {"name": self.graph.name, "format": self.graph.format,
                          "inputs": {n: _shape(self.graph, n) for n in self.graph.inputs}},
                "layers": [c.to_dict() for c in self.layers], "totals": self.totals(),
                "memory": self.memory.to_dict(), "parallelism": self.parallelism.to_dict(),
                "fusion": self.fusion.to_dict(), "not_counted": self.not_counted(),
                "unknown_ops": self.unknown_ops(), "control_flow": self.control_flow(),
                "warnings": list(self.graph.warnings)}


def _shape(graph: Graph, name: str) -> Optional[List[object]]:
    tensor = graph.tensor(name)
    return list(tensor.shape) if tensor is not None and tensor.shape is not None else None


def profile_graph(graph: Graph) -> Profile:
    """The static profile of a graph already read."""
    layers = [layer_cost(graph, layer) for layer in graph.layers]
    return Profile(graph, layers, peak_activation(graph),
                   static_parallelism(graph, [c.flops for c in layers]), find_fusions(graph))


def static_profile(path: Union[str, Path], shapes: Optional[Mapping[str, Sequence[int]]] = None,
                   values: Optional[Mapping[str, Any]] = None) -> Profile:
    """Reads the ONNX or TFLite file at `path` and profiles it; `shapes` sets input dims and `values`
    input values (scalars that steer an If) by name."""
    return profile_graph(read_graph(path, shapes, values))
