"""Static parallelism of the layer graph: how many layers could run at once, and the critical path.

Each layer gets a level, one more than the deepest layer whose output it reads. Layers on one level
never depend on each other, so the widest level is a set of layers that could all run at once: a
lower bound on the graph's true width (its largest antichain), exact for chains and simple branches.
The critical path is the dependency chain with the most FLOPs; total FLOPs over critical-path FLOPs is
the most any inter-layer parallelism could speed the model up, however many cores run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from agent.graph.model import Graph


@dataclass
class Parallelism:
    """Graph width and depth in layers, and the FLOPs on the critical path against the total."""

    width: int
    depth: int
    critical_path_flops: int
    total_flops: int
    widest_level: List[str] = field(default_factory=list)
    critical_path: List[str] = field(default_factory=list)

    @property
    def average_parallelism(self) -> Optional[float]:
        """Total FLOPs over critical-path FLOPs: the speed-up bound of running branches at once."""
        return self.total_flops / self.critical_path_flops if self.critical_path_flops else None

    def to_dict(self) -> Dict[str, object]:
        """JSON form, with `average_parallelism` included."""
        result: Dict[str, object] = dict(vars(self))
        ratio = self.average_parallelism
        result["average_parallelism"] = None if ratio is None else round(ratio, 4)
        return result


def static_parallelism(graph: Graph, flops: Sequence[Optional[int]]) -> Parallelism:
    """Levels and the FLOPs-weighted longest path; `flops[i]` is layer i's (None counts as 0)."""
    producers = graph.producers()
    levels: List[int] = []
    path_flops: List[int] = []
    previous: List[Optional[int]] = []
    for index, layer in enumerate(graph.layers):
        parents = sorted({producers[name] for name in layer.inputs if name in producers})
        levels.append(1 + max((levels[p] for p in parents), default=-1))
        heaviest = max(parents, key=lambda p: path_flops[p], default=None)
        path_flops.append((flops[index] or 0) + (path_flops[heaviest] if heaviest is not None else 0))
        previous.append(heaviest)
    if not levels:
        return Parallelism(0, 0, 0, 0)
    by_level: Dict[int, List[str]] = {}
    for layer, level in zip(graph.layers, levels):
        by_level.setdefault(level, []).append(layer.name)
    widest = max(by_level.values(), key=len)
    end: Optional[int] = max(range(len(path_flops)), key=lambda i: path_flops[i])
    chain: List[str] = []
    while end is not None:
        chain.append(graph.layers[end].name)
        end = previous[end]
    return Parallelism(width=len(widest), depth=len(by_level), critical_path_flops=max(path_flops),
                       total_flops=sum(f or 0 for f in flops), widest_level=widest,
                       critical_path=chain[::-1])
