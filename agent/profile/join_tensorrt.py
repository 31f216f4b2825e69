"""Which of the model's layers each layer of a TensorRT engine runs, from the names its IProfiler reports.

With `ProfilingVerbosity.DETAILED` an engine layer is named after the ONNX nodes it computes, in a few
forms: one node (`/conv1/Conv`); a fusion (`/conv1/Conv + /relu/Relu`); a pointwise fusion
(`PWN(/act/Sigmoid, /act/Mul)`, nested: `PWN(PWN(a, b), c)`); a Myelin region
(`{ForeignNode[/attn/Transpose.../attn/MatMul_1]}`: its first and last node, the layers between them
in model order); a format conversion the builder inserted (`Reformatting CopyNode for Input Tensor 0
to /conv1/Conv`), counted with the layer it feeds; and layers TensorRT made itself
(`(Unnamed Layer* 12) [Shuffle]`), not joined. The first model layer an engine layer names is its head
and takes its time; the others were fused into it. Unverified on hardware: the forms come from
TensorRT's documentation and trtexec's `--dumpProfile` output as published, not from a board here.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List

from agent.graph.model import Graph
from agent.profile.join import Join

FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\.\.\.(.*)\]\}$")
REFORMAT = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.*)$")


def engine_layer_nodes(name: str, order: Dict[str, int]) -> List[str]:
    """The ONNX node names one engine layer's name covers, in model order; `order` is each known
    layer's position (a Myelin region takes every layer between its ends)."""
    name = name.strip()
    reformat = REFORMAT.match(name)
    if reformat:
        return engine_layer_nodes(reformat.group(1), order)
    foreign = FOREIGN.match(name)
    if foreign:
        first, last = order.get(foreign.group(1).strip()), order.get(foreign.group(2).strip())
        if first is None or last is None:
            return []
        by_position = {position: layer for layer, position in order.items()}
        return [by_position[p] for p in range(first, last + 1) if p in by_position]
    found: List[str] = []
    for part in _split(name):
        if part.startswith("PWN(") and part.endswith(")"):
            found += engine_layer_nodes(part[4:-1].replace(", ", " + "), order)
        elif part in order:
            found.append(part)
    return sorted(set(found), key=lambda layer: order[layer])


def _split(name: str) -> List[str]:
    """`a + PWN(b, c) + d` → [a, PWN(b, c), d]: splits on ` + ` outside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(name):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and name.startswith(" + ", index):
            parts.append(name[start:index])
            start = index + 3
    parts.append(name[start:])
    return [part.strip() for part in parts if part.strip()]


def join_tensorrt(graph: Graph, names: Iterable[str]) -> Join:
    """Joins every engine layer to the model layers its name covers (see the module docstring)."""
    order = {layer.name: index for index, layer in enumerate(graph.layers)}
    join = Join()
    for name in names:
        covered = engine_layer_nodes(name, order)
        if not covered:
            join.not_joined.append(name)
            continue
        head = order[covered[0]]
        existing = join.fused_into.get(head, head)
        join.nodes_of.setdefault(existing, []).append(name)
        for layer in covered[1:]:
            if order[layer] != existing and order[layer] not in join.nodes_of:
                join.fused_into[order[layer]] = existing
    return join
