"""Per-layer work: MACs, FLOPs, MULTs, parameters and bytes moved, at the tensors' own dtypes.

Convention (docs/profile.md): one multiply-add is 1 MAC = 2 FLOPs; MULTs count multiplications and
divisions. Formulas read shapes only (never weight values), so a quantized layer costs the same MACs
as its float twin and moves int8 bytes. A layer whose formula needs a shape that is not known, or
whose op is not known, gets None (never 0) and a `note` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from agent.graph.model import BIAS, BUFFER, DATA, OPERAND, PARAM_ROLES, QUANT, UNREADABLE, Graph, Layer, Tensor
from agent.profile.fast_algorithms import fast_algorithms

# FLOPs and MULTs per output element of element-wise kinds (comparisons, exp, tanh, erf: 1 FLOP).
ELEMENTWISE: Dict[str, Tuple[int, int]] = {
    "add": (1, 0), "sub": (1, 0), "mul": (1, 1), "div": (1, 1), "pow": (1, 1), "max": (1, 0),
    "min": (1, 0), "mod": (1, 1), "compare": (1, 0), "logical": (1, 0), "where": (1, 0),
    "squared_difference": (2, 1), "prelu": (2, 1), "relu": (1, 0), "clip": (2, 0),
    "leaky_relu": (2, 1), "sigmoid": (4, 1), "tanh": (1, 0), "hard_sigmoid": (4, 1),
    "hard_swish": (5, 2), "swish": (5, 2), "gelu": (5, 3), "elu": (3, 1), "softplus": (3, 0),
    "softsign": (3, 1), "mish": (5, 1), "unary": (1, 0), "reciprocal": (1, 1), "square": (1, 1),
}
BINARY = frozenset({"add", "sub", "mul", "div", "pow", "max", "min", "mod", "compare", "logical",
                    "squared_difference"})
# FLOPs and MULTs per element of the normalising and quantizing kinds.
PER_ELEMENT = {"softmax": (5, 1), "batchnorm": (2, 1), "layernorm": (7, 3), "l2norm": (3, 2),
               "quantize": (5, 1), "dequantize": (2, 1)}
# FLOPs and MULTs per hidden unit per time step of a recurrent cell, besides its matrix MACs.
CELL = {"lstm": (30, 6), "gru": (23, 5), "rnn": (4, 0), "svdf": (0, 0)}
PEEPHOLES = 3  # an LSTM with peepholes adds p ⊙ c to its input, forget and output gates: 3 multiply-adds
# Reductions take (inputs - outputs) ops; then extra FLOPs per input and per output element, and
# MULTs per input and per output element (a product's ops are all multiplications).
REDUCE_EXTRA = {"mean": (0, 1, 0, 1), "l1": (1, 0, 0, 0), "l2": (1, 1, 1, 0), "sumsquare": (1, 0, 1, 0),
                "logsum": (0, 1, 0, 0), "logsumexp": (1, 1, 0, 0), "prod": (0, 0, 1, -1)}

Work = Tuple[int, int, int]  # macs, flops, mults


class Unresolved(Exception):
    """A formula needs a shape or attribute that the graph does not give."""


@dataclass
class LayerCost:
    """The static cost of one layer; None where it could not be counted (`note` says why)."""

    name: str
    op: str
    kind: str
    dtype: str
    macs: Optional[int]
    flops: Optional[int]
    mults: Optional[int]
    params: int
    param_bytes: int
    buffers: int
    buffer_bytes: int
    bytes_read: Optional[int]
    bytes_written: Optional[int]
    note: Optional[str] = None
    measured_ms: Optional[float] = None
    fast_algorithms: List[Dict[str, object]] = field(default_factory=list)  # agent.profile.fast_algorithms

    @property
    def intensity(self) -> Optional[float]:
        """Arithmetic intensity: FLOPs per byte read and written."""
        if self.flops is None or not self.bytes_read and not self.bytes_written:
            return None
        return self.flops / float((self.bytes_read or 0) + (self.bytes_written or 0))

    def to_dict(self) -> Dict[str, object]:
        """The JSON form of one row of `profile.layers`."""
        row = dict(vars(self))
        row["intensity"] = None if self.intensity is None else round(self.intensity, 4)
        return row


class LayerShapes:
    """Shape questions a formula asks about one layer; raises Unresolved when the answer is unknown."""

    def __init__(self, graph: Graph, layer: Layer) -> None:
        self.layer = layer
        self.attributes = layer.attributes
        self.inputs: List[Optional[Tensor]] = [graph.tensor(name) for name in layer.inputs]
        self.roles = graph.roles(layer)
        self.outputs = [graph.tensor(name) for name in layer.outputs if name]

    def shape(self, index: int) -> Tuple[int, ...]:
        """The known shape of input `index`."""
        tensor = self.inputs[index] if index < len(self.inputs) else None
        if tensor is None or not tensor.is_resolved:
            raise Unresolved(f"shape of input {index} of {self.layer.name} is not known")
        return tuple(int(d) for d in tensor.shape or ())

    def data_index(self) -> int:
        """The position of the first run-time (data) input."""
        return self.roles.index(DATA) if DATA in self.roles else 0

    @property
    def in_elements(self) -> int:
        """Elements of the first data input."""
        return _product(self.shape(self.data_index()))

    @property
    def out_elements(self) -> int:
        """Elements of the first output (the result; later outputs are states or indices)."""
        tensor = self.outputs[0] if self.outputs else None
        if tensor is None or tensor.elements is None:
            raise Unresolved(f"output shape of {self.layer.name} is not known")
        return tensor.elements

    def attribute(self, key: str) -> Any:
        """A normalised attribute the formula cannot do without."""
        value = self.attributes.get(key)
        if value is None:
            raise Unresolved(f"{key} of {self.layer.name} is not known")
        return value

    def has_bias(self) -> bool:
        """Whether the op's bias input position is filled (a constant or not)."""
        return any(i < len(self.layer.positions) and self.layer.positions[i] == BIAS and name
                   for i, name in enumerate(self.layer.inputs))


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _dense(v: LayerShapes, macs: int) -> Work:
    bias_adds = v.out_elements if v.has_bias() else 0
    return macs, 2 * macs + bias_adds, macs


def _conv(v: LayerShapes) -> Work:
    per_group = int(v.attribute("in_channels")) // int(v.attribute("group"))
    return _dense(v, v.out_elements * per_group * _product(v.attribute("kernel")))


def _conv_transpose(v: LayerShapes) -> Work:
    per_group = int(v.attribute("out_channels")) // int(v.attribute("group"))
    return _dense(v, v.in_elements * per_group * _product(v.attribute("kernel")))


def _matmul(v: LayerShapes) -> Work:
    index, axis = v.attribute("k_from")
    return _dense(v, v.out_elements * v.shape(index)[axis])


def _pool(v: LayerShapes) -> Work:
    """Reducing a window of n values takes n - 1 ops; average adds a division, Lp (p=2) squares."""
    out = v.out_elements
    window = v.in_elements // max(out, 1) if v.attributes.get("global") else _product(v.attribute("kernel"))
    pool = v.attributes.get("pool", "avg")
    flops = {"max": window - 1, "avg": window, "lp": 2 * window}[pool] * out
    return 0, flops, {"max": 0, "avg": out, "lp": out * window}[pool]


def _per_element(v: LayerShapes) -> Work:
    flops, mults = PER_ELEMENT[v.layer.kind]
    out = v.out_elements
    return 0, flops * out, mults * out


def _lrn(v: LayerShapes) -> Work:
    size, out = int(v.attribute("size")), v.out_elements
    return 0, (2 * size + 3) * out, (size + 2) * out


def _resize(v: LayerShapes) -> Work:
    source, count = v.shape(v.data_index()), v.out_elements
    target = v.outputs[0].shape if v.outputs[0] is not None else None
    axes = sum(1 for a, b in zip(source, target or ()) if a != b)
    points = {"linear": 2 ** axes, "cubic": 4 ** axes}.get(str(v.attributes.get("mode")), 0)
    return 0, (2 * points - 1) * count if points else 0, points * count


def _reduce(v: LayerShapes) -> Work:
    per_in, per_out, mults_in, mults_out = REDUCE_EXTRA.get(str(v.attributes.get("reduce")), (0, 0, 0, 0))
    count_in, count_out = v.in_elements, v.out_elements
    flops = count_in - count_out + count_in * per_in + count_out * per_out
    return 0, flops, count_in * mults_in + count_out * mults_out


def _recurrent(v: LayerShapes) -> Work:
    data = v.shape(v.data_index())
    time_axis = v.attributes.get("time_axis")
    steps = data[time_axis] if time_axis is not None else 1
    batch = data[int(v.attribute("batch_axis"))]
    matrices = sum(_product(v.shape(i)) for i in v.attribute("matrix_inputs")
                   if i < len(v.inputs) and v.inputs[i] is not None)
    macs = steps * batch * matrices
    cell_flops, cell_mults = CELL[str(v.attribute("cell"))]
    if any(i < len(v.inputs) and v.inputs[i] is not None for i in v.attributes.get("peephole_inputs", ())):
        cell_flops, cell_mults = cell_flops + 2 * PEEPHOLES, cell_mults + PEEPHOLES
    units = steps * batch * int(v.attribute("directions")) * int(v.attribute("hidden_size"))
    return macs, 2 * macs + units * cell_flops, macs + units * cell_mults


def _einsum_letters(term: str, rank: int) -> List[str]:
    """The index of each axis of one Einsum operand; the axes under `...` are named @n from the right."""
    if "..." not in term:
        return list(term)
    head, tail = term.split("...")
    covered = rank - len(head) - len(tail)
    return list(head) + [f"@{covered - j}" for j in range(covered)] + list(tail)


def _einsum(v: LayerShapes) -> Work:
    """Operands contracted left to right: each step costs the product of the sizes of every index its
    two operands hold (a multiply-add per point of that index space); one operand costs no MACs."""
    equation = str(v.attribute("equation")).replace(" ", "")
    terms, arrow, result = equation.partition("->")
    operands = [_einsum_letters(term, len(v.shape(i))) for i, term in enumerate(terms.split(","))]
    sizes: Dict[str, int] = {}
    for index, letters in enumerate(operands):
        for letter, size in zip(letters, v.shape(index)):
            sizes[letter] = max(sizes.get(letter, 1), size)
    kept = set(_einsum_letters(result, len(v.outputs[0].shape or ())) if arrow and v.outputs[0] is not None
               else [k for k in sizes if k.startswith("@") or sum(ops.count(k) for ops in operands) == 1])
    macs, current = 0, set(operands[0])
    for index, letters in enumerate(operands[1:], start=1):
        space = current | set(letters)
        macs += _product([sizes[k] for k in space])
        later = kept.union(*[set(ops) for ops in operands[index + 1:]])
        current = {k for k in space if k in later}
    return macs, 2 * macs, macs


def _attention(v: LayerShapes) -> Work:
    """Q·Kᵀ and softmax(scores)·V over already projected Q [B, N, S, H] or [B, S, N·H], K and V:
    L·(Q elements + output elements) MACs for L key positions; softmax and the 1/√H scale per score."""
    query, key = v.shape(0), v.shape(1)
    if len(key) not in (3, 4):
        raise Unresolved(f"packed key/value layout of {v.layer.name} is not counted")
    length = key[2] if len(key) == 4 else key[1]
    rows = _product(query[:-1]) * (1 if len(query) == 4 else int(v.attributes.get("heads") or 1))
    return _attention_work(length * (_product(query) + v.out_elements), rows * length)


def _attention_packed(v: LayerShapes) -> Work:
    """ORT's Attention: X [B, S, C] times packed weights [C, Q + K + V], then attention over S."""
    data, weights = v.shape(0), v.shape(1)
    sizes = list(v.attributes.get("qkv_sizes") or []) or [weights[1] // 3] * 3
    projection = _product(data) * weights[1]
    rows = _product(data[:-1]) * int(v.attributes.get("heads") or 1)
    return _attention_work(projection + _product(data[:-1]) * data[1] * (sizes[0] + sizes[2]), rows * data[1])


def _attention_work(macs: int, scores: int) -> Work:
    softmax_flops, softmax_mults = PER_ELEMENT["softmax"]
    return macs, 2 * macs + (softmax_flops + 1) * scores, macs + (softmax_mults + 1) * scores


def _elementwise(v: LayerShapes) -> Work:
    flops, mults = ELEMENTWISE[v.layer.kind]
    operands = sum(1 for role in v.roles if role not in (OPERAND, QUANT))
    repeats = max(1, operands - 1) if v.layer.kind in BINARY else 1
    out = v.out_elements
    return 0, flops * out * repeats, mults * out * repeats


COUNTERS: Dict[str, Callable[[LayerShapes], Work]] = {
    "conv": _conv, "conv_transpose": _conv_transpose, "matmul": _matmul, "pool": _pool, "lrn": _lrn,
    "resize": _resize, "reduce": _reduce, "recurrent": _recurrent, "data": lambda v: (0, 0, 0),
    "einsum": _einsum, "attention": _attention, "attention_packed": _attention_packed,
}
COUNTERS.update({kind: _per_element for kind in PER_ELEMENT})
COUNTERS.update({kind: _elementwise for kind in ELEMENTWISE})
NOT_COUNTED = {"control_flow": "control-flow op: its subgraphs ({}) are not counted",
               "unknown": "op not known to the profiler"}
KNOWN_KINDS = frozenset(COUNTERS) | frozenset(NOT_COUNTED)


def _bytes(tensors: Sequence[Optional[Tensor]]) -> Optional[int]:
    sizes = [t.nbytes for t in tensors if t is not None]
    return None if any(size is None for size in sizes) else sum(int(s) for s in sizes if s is not None)


def layer_cost(graph: Graph, layer: Layer) -> LayerCost:
    """The cost of `layer` in `graph`: work from its kind's formula, parameters and bytes from shapes;
    a loop body's layer counts its work and bytes once per trip (`Layer.repeat`)."""
    v = LayerShapes(graph, layer)
    note: Optional[str] = NOT_COUNTED.get(layer.kind)
    inlined = layer.kind == "control_flow" and any(entry.layer == layer.name for entry in graph.control_flow)
    if inlined:
        note = None  # the reader inlined its subgraphs: their layers carry the work
    elif note is not None:
        note = note.format(", ".join(layer.attributes.get("subgraphs", [])))
    work: Tuple[Optional[int], ...] = (None, None, None)
    if note is None:
        try:
            work = (0, 0, 0) if inlined else COUNTERS[layer.kind](v)
            activation = layer.attributes.get("activation")
            if activation:
                flops, mults = ELEMENTWISE[activation]
                work = (work[0], work[1] + flops * v.out_elements, work[2] + mults * v.out_elements)
        except Unresolved as reason:
            note = str(reason)
        except UNREADABLE as error:  # attributes of a malformed model that do not add up
            note = f"could not be counted ({error!r})"
    params = [t for t, role in zip(v.inputs, v.roles) if t is not None and role in PARAM_ROLES]
    buffers = [t for t, role in zip(v.inputs, v.roles) if t is not None and role == BUFFER]
    data = [t for t, role in zip(v.inputs, v.roles) if t is not None and role == DATA]
    dtype = (data or [t for t in v.inputs if t is not None] or [t for t in v.outputs if t is not None]
             or [Tensor("", None, "unknown")])[0].dtype
    trips = layer.repeat or 1
    moved = (_bytes(v.inputs), _bytes(v.outputs))
    fast: List[Dict[str, object]] = []
    if layer.kind == "conv" and data and v.outputs and v.outputs[0] is not None and data[0].is_resolved:
        fast = fast_algorithms(layer.attributes, data[0].shape, v.outputs[0].shape, work[0])  # type: ignore[arg-type]
    return LayerCost(
        name=layer.name, op=layer.op, kind=layer.kind, dtype=dtype,
        macs=_times(work[0], trips), flops=_times(work[1], trips), mults=_times(work[2], trips),
        params=sum(t.elements or 0 for t in params), param_bytes=_bytes(params) or 0,
        buffers=sum(t.elements or 0 for t in buffers), buffer_bytes=_bytes(buffers) or 0,
        bytes_read=_times(moved[0], trips), bytes_written=_times(moved[1], trips), note=note,
        fast_algorithms=fast)


def _times(value: Optional[int], trips: int) -> Optional[int]:
    return None if value is None else value * trips
