"""Fusion opportunities a compiler such as TensorRT would take, found in the layer graph.

- vertical: a Conv/ConvTranspose/Gemm/MatMul followed by a BatchNorm and/or an activation, each
  intermediate tensor read by that one next layer only: one kernel instead of several, and every
  intermediate tensor is neither written to memory nor read back (2 x its bytes saved);
- horizontal: layers of the same op, attributes and weight shapes reading the same tensor (the Q, K,
  V projections of attention; parallel 1x1 convs): one wider layer reads the input once, not k times;
- dead outputs: tensors a layer writes that no layer reads and the model does not return.
TFLite files carry their activations fused already (`activation` attribute); those are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from agent.graph.model import Graph, Layer, Tensor
from agent.profile.costs import ELEMENTWISE

HEADS = frozenset({"conv", "conv_transpose", "matmul"})
ACTIVATIONS = frozenset(ELEMENTWISE) - {"add", "sub", "mul", "div", "pow", "max", "min", "mod", "compare",
                                        "logical", "where", "squared_difference", "square", "unary",
                                        "reciprocal"}
NOT_MERGED = frozenset({"data", "quantize", "dequantize", "control_flow", "unknown"})


@dataclass
class Fusion:
    """One opportunity: the layers involved, the tensors it avoids moving, and the bytes saved."""

    layers: List[str]
    tensors: List[str]
    saved_bytes: Optional[int]


@dataclass
class FusionReport:
    """Opportunities of each kind; `to_dict` adds their counts and byte sums."""

    vertical: List[Fusion] = field(default_factory=list)
    horizontal: List[Fusion] = field(default_factory=list)
    dead_outputs: List[Fusion] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        """{kind: {"count", "saved_bytes", "groups": [{"layers", "tensors", "saved_bytes"}]}}."""
        return {kind: {"count": len(found), "saved_bytes": sum(f.saved_bytes or 0 for f in found),
                       "groups": [dict(vars(f)) for f in found]}
                for kind, found in (("vertical", self.vertical), ("horizontal", self.horizontal),
                                    ("dead_outputs", self.dead_outputs))}


def _bytes(tensors: List[Optional[Tensor]], factor: int) -> Optional[int]:
    sizes = [t.nbytes if t is not None else None for t in tensors]
    return None if any(s is None for s in sizes) else factor * sum(int(s or 0) for s in sizes)


def find_fusions(graph: Graph) -> FusionReport:
    """All three kinds of opportunity in `graph`."""
    return FusionReport(_vertical(graph), _horizontal(graph), _dead_outputs(graph))


def _vertical(graph: Graph) -> List[Fusion]:
    consumers = graph.consumers()
    returned = set(graph.outputs)
    found = []
    for layer in graph.layers:
        if layer.kind not in HEADS or len(layer.outputs) != 1:
            continue
        chain, tensors = [layer.name], []
        current: Layer = layer
        for allowed in (("batchnorm",), ACTIVATIONS):
            tensor = current.outputs[0] if len(current.outputs) == 1 else ""
            readers = consumers.get(tensor, [])
            if tensor in returned or len(readers) != 1 or graph.layers[readers[0]].kind not in allowed:
                continue
            current = graph.layers[readers[0]]
            chain.append(current.name)
            tensors.append(tensor)
        if tensors:
            found.append(Fusion(chain, tensors, _bytes([graph.tensor(t) for t in tensors], 2)))
    return found


def _signature(graph: Graph, layer: Layer) -> Tuple[str, str, str]:
    weights = [graph.tensors[n].shape for n in layer.inputs if n in graph.tensors and graph.tensors[n].is_constant]
    return layer.op, repr(weights), repr(sorted(layer.attributes.items()))


def _horizontal(graph: Graph) -> List[Fusion]:
    found = []
    for name, readers in graph.consumers().items():
        tensor = graph.tensor(name)
        if tensor is None or tensor.is_constant:
            continue
        groups: Dict[Tuple[str, str, str], List[str]] = {}
        for index in readers:
            layer = graph.layers[index]
            if layer.kind not in NOT_MERGED:
                groups.setdefault(_signature(graph, layer), []).append(layer.name)
        for members in groups.values():
            if len(members) > 1:
                found.append(Fusion(members, [name], _bytes([tensor], len(members) - 1)))
    return found


def _dead_outputs(graph: Graph) -> List[Fusion]:
    read = set(graph.consumers()) | set(graph.outputs)
    found = []
    for layer in graph.layers:
        dead = [name for name in layer.outputs if name and name not in read]
        if dead:
            found.append(Fusion([layer.name], dead, _bytes([graph.tensor(t) for t in dead], 1)))
    return found
