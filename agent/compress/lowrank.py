"""Which layers of an ONNX model can be factorised, at which rank, and at what cost (docs/compress.md).

A layer is a candidate when its weight is an initializer no other node reads: Gemm, MatMul with a constant
2-D second input (truncated SVD), a 2-D Conv with group 1 (Tucker-2 or the spatial form for k x k kernels,
the SVD of the channel matrix for 1 x 1). Grouped and depthwise convolutions, other convolutions and
run-time weights are listed as skipped with the reason. A candidate's costs at a rank are the MACs and
parameters of its factors: each factor's weight elements times the positions it runs at (the profiler's
conv and matmul formulas, docs/profile.md); `profile` counts the written model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from agent.compress.edit import OnnxModel
from agent.compress.factor import (
    Factors,
    matrix_factors,
    rank_for_energy,
    spatial_factors,
    spatial_matrix,
    spectrum,
    tucker2_factors,
    unfold,
)
from agent.errors import UsageError
from agent.graph.model import Graph, Layer
from agent.profile.costs import layer_cost

CONV_FORMS = ("tucker2", "spatial")
Ranks = Tuple[int, ...]


@dataclass
class Candidate:
    """One layer that can be factorised: its weight in the form the factorisation reads, and where it runs.

    `weight` is a K x N matrix for `svd` (Gemm/MatMul; a 1 x 1 conv's I x O channel matrix), the kernel
    (O, I, kh, kw) for `tucker2` and `spatial`. `positions` = (input, middle, output) positions: the
    rows of a matmul, or batch x height x width of the conv's input, of the spatial form's middle tensor
    (output height, input width), and of its output.
    """

    node: str
    name: str
    op: str
    form: str
    weight: np.ndarray
    bias: Optional[str]
    bias_params: int
    positions: Tuple[int, int, int]
    macs: int
    params: int
    window: Dict[str, List[int]] = field(default_factory=dict)
    spectra: Tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if self.form == "svd":
            self.spectra = (spectrum(self.weight),)
        elif self.form == "tucker2":
            self.spectra = (spectrum(unfold(self.weight, 0)), spectrum(unfold(self.weight, 1)))
        else:
            self.spectra = (spectrum(spatial_matrix(self.weight)),)

    @property
    def full_rank(self) -> int:
        """The largest rank `--rank` may ask: min(K, N) for the SVDs, max(O, I) for Tucker-2."""
        if self.form == "tucker2":
            return max(self.weight.shape[:2])
        return len(self.spectra[0])

    def ranks_for_energy(self, energy: float) -> Ranks:
        """Per mode, the smallest rank keeping `energy` of that unfolding's squared singular values."""
        return tuple(rank_for_energy(values, energy) for values in self.spectra)

    def ranks_for_rank(self, rank: int) -> Ranks:
        """`--rank R` for this layer: R for the SVDs, min(R, mode size) per mode for Tucker-2."""
        if rank > self.full_rank:
            raise UsageError(f"--rank {rank} is above the full rank {self.full_rank} of layer {self.name} "
                             f"({self.op} {'x'.join(str(d) for d in self.weight.shape)}): give --layers or a "
                             "smaller --rank")
        if self.form == "tucker2":
            return (min(rank, self.weight.shape[0]), min(rank, self.weight.shape[1]))
        return (rank,)

    def cost(self, ranks: Ranks) -> Tuple[int, int]:
        """(parameters, MACs) of the factorised layer at `ranks`, bias included."""
        shape = self.weight.shape
        p_in, p_mid, p_out = self.positions
        if self.form == "svd":
            elements = ranks[0] * (shape[0] + shape[1])
            return elements + self.bias_params, p_out * elements
        if self.form == "spatial":
            first, second = ranks[0] * shape[1] * shape[2], shape[0] * ranks[0] * shape[3]
            return first + second + self.bias_params, p_mid * first + p_out * second
        (out_rank, in_rank), (out_channels, in_channels, height, width) = ranks, shape
        first = in_channels * in_rank if in_rank < in_channels else 0
        last = out_rank * out_channels if out_rank < out_channels else 0
        core = out_rank * in_rank * height * width
        return first + core + last + self.bias_params, p_in * first + p_out * (core + last)

    def factors(self, ranks: Ranks) -> Factors:
        """The factor weights at `ranks`, applied first to last."""
        if self.form == "svd":
            factors = matrix_factors(self.weight, ranks[0])
            if self.op == "Conv":  # I x r and r x O as 1x1 kernels (r, I, 1, 1) and (O, r, 1, 1)
                factors.arrays = [a.T[:, :, None, None] for a in factors.arrays]
            return factors
        if self.form == "spatial":
            return spatial_factors(self.weight, ranks[0])
        return tucker2_factors(self.weight, ranks[0], ranks[1])


@dataclass
class Skipped:
    """A layer with weights that is not factorised, and why."""

    name: str
    op: str
    reason: str


def candidates(model: OnnxModel, graph: Graph, conv_form: str = "tucker2",
               only: Optional[List[str]] = None) -> Tuple[List[Candidate], List[Skipped]]:
    """Every factorisable layer of `model` (whose layer graph is `graph`), and the layers with weights that
    are not, each with its reason. `only` keeps the layers of those names."""
    if conv_form not in CONV_FORMS:
        raise UsageError(f"--conv must be one of {', '.join(CONV_FORMS)}, not {conv_form!r}")
    nodes = model.nodes_by_output()
    found: List[Candidate] = []
    skipped: List[Skipped] = []
    for layer in graph.layers:
        if layer.kind not in ("conv", "matmul") or (only is not None and layer.name not in only):
            continue
        node = nodes.get(layer.outputs[0])
        reason = _unfit(model, layer, node)
        if reason:
            skipped.append(Skipped(layer.name, layer.op, reason))
            continue
        found.append(_candidate(model, graph, layer, node, conv_form))
    if only is not None:
        missing = sorted(set(only) - {c.name for c in found} - {s.name for s in skipped})
        if missing:
            raise UsageError(f"--layers: no Conv, Gemm or MatMul layer named {', '.join(missing)}")
    return found, skipped


def _unfit(model: OnnxModel, layer: Layer, node: object) -> Optional[str]:
    """Why a conv/matmul layer cannot be factorised here; None when it can."""
    if node is None or layer.op not in ("Conv", "Gemm", "MatMul"):
        return f"{layer.op} is not factorised (Conv, Gemm and MatMul are)"
    weight = model.constant(layer.inputs[1]) if len(layer.inputs) > 1 else None
    if weight is None or weight.dtype != np.float32:
        return "its weight is not a float32 initializer"
    if model.readers(layer.inputs[1]) > 1:
        return "its weight is shared with another layer"
    if layer.op == "Conv":
        if weight.ndim != 4:
            return f"a {weight.ndim - 2}-D convolution (only 2-D ones are factorised)"
        if layer.attributes.get("group", 1) != 1:
            group = layer.attributes["group"]
            return f"grouped convolution (group {group}{', depthwise' if weight.shape[1] == 1 else ''})"
        if layer.attributes.get("pads") is None:
            return "its padding is not known"
    elif weight.ndim != 2:
        return "its weight is not a matrix"
    bias = layer.inputs[2] if len(layer.inputs) > 2 and layer.inputs[2] else None
    if bias is not None and model.constant(bias) is None:
        return "its bias is not an initializer"
    return None


def _candidate(model: OnnxModel, graph: Graph, layer: Layer, node: object, conv_form: str) -> Candidate:
    weight = model.constant(layer.inputs[1])
    assert weight is not None
    bias = layer.inputs[2] if len(layer.inputs) > 2 and layer.inputs[2] else None
    bias_values = model.constant(bias) if bias else None
    bias_params = 0 if bias_values is None else int(bias_values.size)
    cost = layer_cost(graph, layer)
    source, result = graph.tensor(layer.inputs[0]), graph.tensor(layer.outputs[0])
    if cost.macs is None or source is None or result is None or not source.is_resolved or not result.is_resolved:
        raise UsageError(f"layer {layer.name}: its shapes are not known; give the input shapes with --shape")
    out_shape = tuple(int(d) for d in result.shape or ())
    form, window, positions = "svd", {}, (0, 0, 0)
    if layer.op == "Conv":
        in_shape = tuple(int(d) for d in source.shape or ())
        window = {key: list(layer.attributes[key]) for key in ("kernel", "strides", "dilations", "pads")}
        positions = (in_shape[0] * in_shape[2] * in_shape[3], out_shape[0] * out_shape[2] * in_shape[3],
                     out_shape[0] * out_shape[2] * out_shape[3])
        if weight.shape[2:] == (1, 1):
            weight = weight[:, :, 0, 0].T
        else:
            form = conv_form
    else:
        attributes = {a.name: a for a in getattr(node, "attribute", [])}
        if "transB" in attributes and attributes["transB"].i:
            weight = weight.T
        rows = int(np.prod(out_shape)) // int(weight.shape[1])
        positions = (rows, rows, rows)
    return Candidate(layer.outputs[0], layer.name, layer.op, form, weight, bias, bias_params, positions,
                     int(cost.macs), int(weight.size) + bias_params, window)
