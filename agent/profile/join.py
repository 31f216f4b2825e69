"""Which of the model's layers each node of the runtime's optimized graph runs.

ONNX Runtime rewrites a model before running it: it folds constants, fuses Conv + BatchNorm +
activation, MatMul + Add into Gemm, a residual Add into the Conv before it, and on CPUs converts
convolutions to its blocked NCHWc layout with Reorder nodes around them. Its trace times the nodes
of that rewritten graph. The join maps them back in two steps:

1. Regions (exact). A tensor that keeps its name in both graphs is an anchor. Layers joined by a
   tensor that is not an anchor form one region; so do runtime nodes; a model region and a runtime
   region that write the same anchor are one region. The runtime nodes of a region compute exactly
   the layers of that region.
2. Heads (aligned). Inside a region, runtime nodes are taken in execution order and each is matched
   with the first free layer of the same op, or of the same kind for fused ops (FusedConv and NCHWc
   Conv are convs, Gemm and FusedMatMul matmuls), with the same kernel, strides and group: that layer
   is the node's head. Every other layer was fused into the head of the latest layer it reads from
   (an activation, a BatchNorm, a residual Add after its Conv) or, at the region's entry, of the first
   layer that reads it. A runtime node that heads no layer (an NCHWc reorder, an inserted cast) is
   counted with the head of the node it reads from, else of the node that reads it.

Layers whose outputs the runtime holds as constants were folded at load time; runtime nodes in a
region without layers (a subgraph's nodes, for instance) are reported as not joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Sequence, Set, Tuple

from agent.graph.model import Graph, Layer
from agent.graph.onnx_ops import kind_and_roles

# Runtime-node attributes and the layer attributes (agent/graph/onnx.py `_normalise`) they must equal.
GEOMETRY = (("kernel_shape", "kernel"), ("strides", "strides"), ("group", "group"))
Key = Tuple[str, int]  # ("g", layer index) or ("o", runtime node index)


@dataclass
class RuntimeNode:
    """A node of the graph the runtime ran: activation inputs and outputs only, kernel attributes."""

    name: str
    op: str
    inputs: List[str]
    outputs: List[str]
    attributes: Dict[str, List[int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> RuntimeNode:
        """A node as `trace.runtime_graph` describes it."""
        return cls(data["name"], data["op"], list(data["inputs"]), list(data["outputs"]),
                   dict(data.get("attributes") or {}))


@dataclass
class Join:
    """Runtime nodes per head layer, the layers fused into each head, and what could not be joined."""

    nodes_of: Dict[int, List[str]] = field(default_factory=dict)
    fused_into: Dict[int, int] = field(default_factory=dict)
    folded: List[int] = field(default_factory=list)
    removed: List[int] = field(default_factory=list)
    not_joined: List[str] = field(default_factory=list)


class _Regions:
    """Union-find over model layers and runtime nodes."""

    def __init__(self) -> None:
        self.parent: Dict[Key, Key] = {}

    def find(self, key: Key) -> Key:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: Key, b: Key) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> List[List[Key]]:
        found: Dict[Key, List[Key]] = {}
        for key in list(self.parent):
            found.setdefault(self.find(key), []).append(key)
        return [sorted(keys) for keys in found.values()]


def join_by_name(graph: Graph, names: Iterable[str]) -> Join:
    """The fallback without the runtime's graph: a node joins the layer of the same name, if any."""
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    join = Join()
    for name in names:
        if name in index:
            join.nodes_of.setdefault(index[name], []).append(name)
        else:
            join.not_joined.append(name)
    return join


def join_runtime(graph: Graph, nodes: Sequence[RuntimeNode], constants: Set[str]) -> Join:
    """Joins every runtime node to the layers it computes (see the module docstring)."""
    layers = graph.layers
    made_by = graph.producers()
    node_made_by = {name: j for j, node in enumerate(nodes) for name in node.outputs}
    anchors = {name for name in node_made_by if name in made_by}
    join = Join(folded=_folded(graph, constants))
    folded = set(join.folded)
    regions = _Regions()
    for i, layer in enumerate(layers):
        if i in folded:
            continue
        regions.find(("g", i))
        for name in layer.inputs:
            if name in made_by and name not in anchors and made_by[name] not in folded:
                regions.union(("g", i), ("g", made_by[name]))
    for j, node in enumerate(nodes):
        regions.find(("o", j))
        for name in node.inputs:
            if name in node_made_by and name not in anchors:
                regions.union(("o", j), ("o", node_made_by[name]))
    for name in anchors:
        if made_by[name] not in folded:
            regions.union(("g", made_by[name]), ("o", node_made_by[name]))
    for keys in regions.groups():
        region_layers = [i for side, i in keys if side == "g"]
        region_nodes = [j for side, j in keys if side == "o"]
        if not region_layers:
            join.not_joined += [nodes[j].name for j in region_nodes]
        elif not region_nodes:
            join.removed += region_layers
        else:
            _join_region(graph, nodes, region_layers, region_nodes, node_made_by, join)
    join.removed.sort()
    return join


def _folded(graph: Graph, constants: Set[str]) -> List[int]:
    """Layers whose every output is a runtime constant, or feeds only folded layers (reverse sweep)."""
    readers = graph.consumers()
    returned = set(graph.outputs)
    folded: Set[int] = set()
    for i in reversed(range(len(graph.layers))):
        outputs = [name for name in graph.layers[i].outputs if name]
        if outputs and all(name in constants or (name not in returned and readers.get(name)
                                                 and all(r in folded for r in readers[name]))
                           for name in outputs):
            folded.add(i)
    return sorted(folded)


def compatible(layer: Layer, node: RuntimeNode) -> bool:
    """Whether `node` can be the runtime's version of `layer`: same op (or kind), same kernel geometry."""
    kind = kind_and_roles(node.op)[0]
    if node.op != layer.op and (kind != layer.kind or kind in ("data", "unknown")):
        return False
    for node_key, layer_key in GEOMETRY:
        mine, theirs = node.attributes.get(node_key), layer.attributes.get(layer_key)
        if mine is not None and theirs is not None and list(mine) != list(_as_list(theirs)):
            return False
    return True


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _join_region(graph: Graph, nodes: Sequence[RuntimeNode], region_layers: List[int], region_nodes: List[int],
                 node_made_by: Dict[str, int], join: Join) -> None:
    layers = graph.layers
    head_of_node: Dict[int, int] = {}
    free = list(region_layers)
    for j in region_nodes:
        match = next((i for i in free if compatible(layers[i], nodes[j])), None)
        if match is not None:
            head_of_node[j] = match
            free.remove(match)
    if not head_of_node:  # nothing aligns: the region's time goes to its first layer
        head_of_node[region_nodes[0]] = region_layers[0]
    heads = set(head_of_node.values())
    head_of_layer = {i: i for i in heads}
    members = set(region_layers)
    made_by = graph.producers()
    readers = graph.consumers()
    _spread(head_of_layer, region_layers, lambda i: [made_by[n] for n in layers[i].inputs
                                                     if made_by.get(n) in members], latest=True)
    _spread(head_of_layer, region_layers[::-1], lambda i: [r for n in layers[i].outputs
                                                           for r in readers.get(n, []) if r in members], latest=False)
    node_members = set(region_nodes)
    node_readers: Dict[str, List[int]] = {}
    for j in region_nodes:
        for name in nodes[j].inputs:
            node_readers.setdefault(name, []).append(j)
    _spread(head_of_node, region_nodes, lambda j: [node_made_by[n] for n in nodes[j].inputs
                                                   if node_made_by.get(n) in node_members], latest=True)
    _spread(head_of_node, region_nodes[::-1], lambda j: [r for n in nodes[j].outputs
                                                         for r in node_readers.get(n, [])], latest=False)
    fallback = min(heads)
    for i in region_layers:
        head = head_of_layer.get(i, fallback)
        if head != i:
            join.fused_into[i] = head
    for j in region_nodes:
        join.nodes_of.setdefault(head_of_node.get(j, fallback), []).append(nodes[j].name)


def _spread(assigned: Dict[int, int], order: Sequence[int], neighbours: Any, latest: bool) -> None:
    """Gives each unassigned item, in `order`, the head of its latest (or earliest) assigned neighbour."""
    for item in order:
        if item in assigned:
            continue
        known = [n for n in neighbours(item) if n in assigned]
        if known:
            assigned[item] = assigned[max(known) if latest else min(known)]

