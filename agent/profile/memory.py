"""Peak activation memory from tensor liveness over the layers' execution order.

A run-time tensor lives from the step that writes it (graph inputs: from the start) to the last step
that reads it (graph outputs: to the end); at each step the inputs and outputs of the running layer
are all live. The peak is what a runtime needs for activations if it frees each tensor after its last
reader and never computes in place: an upper bound on a good arena, a lower bound on a naive one.
Weights are not activations and are reported apart (the totals' parameter and buffer bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from agent.graph.model import Graph


@dataclass
class PeakMemory:
    """The largest sum of live activation bytes, the layer running then, and the tensors live then."""

    peak_bytes: int
    at_layer: Optional[str]
    live_tensors: List[str] = field(default_factory=list)
    unknown_tensors: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        """JSON form; `unknown_tensors` are activations of unknown size, left out of the peak."""
        return dict(vars(self))


def peak_activation(graph: Graph) -> PeakMemory:
    """Sweeps the layers in order, adding each output when written and freeing after the last read."""
    steps = len(graph.layers)
    last_read: Dict[str, int] = {}
    for index, layer in enumerate(graph.layers):
        for name in layer.inputs:
            last_read[name] = index
    for name in graph.outputs:
        last_read[name] = steps
    sizes: Dict[str, int] = {}
    unknown: List[str] = []

    def activation_size(name: str) -> Optional[int]:
        tensor = graph.tensor(name)
        if tensor is None or tensor.is_constant or name in sizes:
            return None
        if tensor.nbytes is None:
            unknown.append(name)
            return None
        sizes[name] = tensor.nbytes
        return tensor.nbytes

    live: Dict[str, int] = {}
    for name in graph.inputs:
        size = activation_size(name)
        if size is not None:
            live[name] = size
    peak = PeakMemory(sum(live.values()), None, sorted(live), unknown)
    for index, layer in enumerate(graph.layers):
        for name in layer.outputs:
            size = activation_size(name)
            if size is not None:
                live[name] = size
        total = sum(live.values())
        if total > peak.peak_bytes:
            peak = PeakMemory(total, layer.name, sorted(live), unknown)
        for name in list(live):
            if last_read.get(name, index) <= index:
                del live[name]
    return peak
