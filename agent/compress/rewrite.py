"""Writes the factorised layers into the model: each chosen layer becomes a chain of nodes named
`<layer>/lowrank<i>` whose last node writes the layer's own output, so the rest of the graph is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from agent.compress.edit import OnnxModel
from agent.compress.lowrank import Candidate
from agent.compress.ranks import Decision

SUFFIX = "/lowrank"


@dataclass
class LayerResult:
    """What happened to one candidate: its ranks, kept energy and relative error when factorised."""

    name: str
    op: str
    form: str
    weight_shape: List[int]
    full_rank: int
    ranks: Optional[List[int]]
    kept_energy: Optional[float]
    relative_error: Optional[float]
    reason: Optional[str]


def apply(model: OnnxModel, decisions: List[Decision]) -> List[LayerResult]:
    """Factorise every decision that has ranks, in `model`; the result of each decision."""
    nodes = model.nodes_by_output()
    results = []
    for decision in decisions:
        candidate = decision.candidate
        result = LayerResult(candidate.name, candidate.op, candidate.form, list(candidate.weight.shape),
                             candidate.full_rank, None, None, None, decision.reason)
        if decision.ranks is not None:
            factors = candidate.factors(decision.ranks)
            node = nodes[candidate.node]
            model.replace(node, _chain(model, node, candidate, factors.arrays))
            result.ranks, result.kept_energy = list(decision.ranks), round(factors.kept_energy, 6)
            result.relative_error = round(factors.relative_error, 6)
        results.append(result)
    return results


def _chain(model: OnnxModel, node: Any, candidate: Candidate, arrays: List[np.ndarray]) -> List[Any]:
    """The new nodes: one per factor, the first reading the layer's input, the last its bias and output."""
    attributes = {a.name: a for a in node.attribute}
    chain, source = [], node.input[0]
    for index, weight in enumerate(arrays):
        last = index == len(arrays) - 1
        name = f"{candidate.name}{SUFFIX}{index}"
        inputs = [source, model.add_constant(f"{name}/weight", weight)]
        if last and candidate.bias:
            inputs.append(candidate.bias)
        output = node.output[0] if last else f"{candidate.node}{SUFFIX}{index}"
        chain.append(model.node(candidate.op, inputs, output, name, **_attributes(candidate, attributes,
                                                                                   weight, index, last)))
        source = output
    return chain


def _attributes(candidate: Candidate, original: dict, weight: np.ndarray, index: int, last: bool) -> dict:
    if candidate.op == "MatMul":
        return {}
    if candidate.op == "Gemm":
        first = index == 0
        kept = {"alpha": first, "transA": first, "beta": last}
        return {key: getattr(original[key], "f" if key != "transA" else "i")
                for key, wanted in kept.items() if wanted and key in original}
    window, kernel = candidate.window, list(weight.shape[2:])
    full = {"kernel_shape": kernel, "strides": window["strides"], "pads": window["pads"],
            "dilations": window["dilations"]}
    if candidate.form == "spatial":  # the vertical factor runs along axis 0, the horizontal one along axis 1
        axis = 0 if index == 0 else 1
        pads = [0, 0, 0, 0]
        pads[axis], pads[axis + 2] = window["pads"][axis], window["pads"][axis + 2]
        strides, dilations = [1, 1], [1, 1]
        strides[axis], dilations[axis] = window["strides"][axis], window["dilations"][axis]
        return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations}
    if candidate.form == "tucker2":  # the core has the layer's window; its 1x1 projections have none
        return full if kernel == window["kernel"] else {"kernel_shape": kernel}
    return full if index == 0 else {"kernel_shape": kernel}  # a 1x1 conv's channel SVD
