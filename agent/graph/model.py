"""The format-neutral layer graph that the ONNX and TFLite readers both produce.

Everything the profiler computes (costs, memory, parallelism, fusion) reads only these classes, so it
is written once for every model format. A `Layer` keeps its source op type (`op`) for reports and a
canonical `kind` (e.g. `conv`, `matmul`, `relu`) that the cost formulas dispatch on; its attributes are
normalised across formats (kernel, strides, pads, dilations, group, in/out channels, activation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

# A dimension is a positive int when known, else the symbolic name (or "?") the model gave it.
Dim = Union[int, str]

# Bits per element of every dtype a model may hold; int4 and friends pack two per byte.
DTYPE_BITS: Dict[str, int] = {
    "float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "float8": 8,
    "int64": 64, "uint64": 64, "int32": 32, "uint32": 32, "int16": 16, "uint16": 16,
    "int8": 8, "uint8": 8, "int4": 4, "uint4": 4, "int2": 2, "bool": 8,
    "complex64": 64, "complex128": 128,
}
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "float8"})
QUANTIZED_DTYPES = frozenset({"int8", "uint8", "int4", "uint4", "int2", "int16"})

# What an input of a layer is, decided by its position for ops the readers know (see `resolve_role`).
DATA = "data"          # an activation computed at run time
WEIGHT = "weight"      # a learnable parameter (conv kernel, gemm matrix, norm scale)
BIAS = "bias"          # a learnable bias
BUFFER = "buffer"      # a statistic that is not learned by gradient (BatchNorm running mean/var)
QUANT = "quant"        # a quantization scale or zero point
OPERAND = "operand"    # a shape, axes, indices, bounds: read, but not a parameter
PARAM_ROLES = frozenset({WEIGHT, BIAS})
# What a reader's attribute normalisation raises on a malformed node (a missing input or attribute).
UNREADABLE = (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError)


@dataclass
class QuantParams:
    """Affine quantization of a tensor: real = scale * (q - zero_point), per tensor or per `axis`."""

    scale: Tuple[float, ...]
    zero_point: Tuple[int, ...]
    axis: Optional[int] = None


@dataclass
class Tensor:
    """A tensor of the graph: its shape may hold symbolic dims; `is_constant` marks weights."""

    name: str
    shape: Optional[Tuple[Dim, ...]]
    dtype: str
    is_constant: bool = False
    quant: Optional[QuantParams] = None

    @property
    def is_resolved(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def elements(self) -> Optional[int]:
        """Number of elements, or None while a dimension is unknown."""
        if not self.is_resolved:
            return None
        count = 1
        for dim in self.shape or ():
            count *= int(dim)
        return count

    @property
    def nbytes(self) -> Optional[int]:
        """Bytes at the tensor's own dtype (sub-byte types rounded up), or None when unknown."""
        elements = self.elements
        bits = DTYPE_BITS.get(self.dtype)
        if elements is None or bits is None:
            return None
        return (elements * bits + 7) // 8


@dataclass
class ControlFlow:
    """What the reader did with one If, Loop or Scan: the branch taken, both branches, or a body × trips."""

    layer: str
    op: str
    mode: str  # "taken", "both" (the larger branch is the bound), "repeated", "per_iteration"
    branch: Optional[str] = None
    trips: Optional[int] = None
    reason: str = ""
    inputs: List[str] = field(default_factory=list)  # model inputs whose values choose an If's branch

    def to_dict(self) -> Dict[str, object]:
        """The JSON form of one entry of `profile.control_flow`."""
        return dict(vars(self))


@dataclass
class Layer:
    """One operator: source `op`, canonical `kind`, tensor names in and out, attributes.

    `positions` holds the role the op gives each input position (None where the op does not say);
    `Graph.roles` turns it into the final roles once it is known which tensors are constant.
    `branches` names the If branches the layer sits in (outermost first) when both were kept;
    `repeat` is how often a loop body runs it (None: a trip count not known before run time).
    """

    name: str
    op: str
    kind: str
    inputs: List[str]
    outputs: List[str]
    positions: Tuple[Optional[str], ...] = ()
    attributes: Dict[str, Any] = field(default_factory=dict)
    branches: Tuple[Tuple[str, str], ...] = ()
    repeat: Optional[int] = 1


@dataclass
class Graph:
    """A whole model as layers in execution order; `warnings` name what the reader could not resolve."""

    name: str
    format: str
    tensors: Dict[str, Tensor]
    layers: List[Layer]
    inputs: List[str]
    outputs: List[str]
    warnings: List[str] = field(default_factory=list)
    control_flow: List[ControlFlow] = field(default_factory=list)

    def tensor(self, name: str) -> Optional[Tensor]:
        """The tensor called `name`; None for an absent optional input ("")."""
        return self.tensors.get(name) if name else None

    def consumers(self) -> Dict[str, List[int]]:
        """For every tensor name, the indices of the layers that read it, in execution order."""
        readers: Dict[str, List[int]] = {}
        for index, layer in enumerate(self.layers):
            for name in layer.inputs:
                if name and index not in readers.setdefault(name, []):
                    readers[name].append(index)
        return readers

    def roles(self, layer: Layer) -> List[str]:
        """The role of each of `layer`'s inputs (see `resolve_role`)."""
        return [resolve_role(layer.positions[i] if i < len(layer.positions) else None, self.tensor(name))
                for i, name in enumerate(layer.inputs)]

    def upstream_inputs(self, name: str) -> List[str]:
        """The graph inputs whose values the tensor `name` is computed from, sorted."""
        producers = self.producers()
        found, pending, seen = set(), [name], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            if current in self.inputs:
                found.add(current)
            if current in producers:
                pending.extend(n for n in self.layers[producers[current]].inputs if n)
        return sorted(found)

    def producers(self) -> Dict[str, int]:
        """For every tensor name that a layer writes, the index of that layer."""
        return {name: index for index, layer in enumerate(self.layers) for name in layer.outputs if name}


def resolve_role(position_role: Optional[str], tensor: Optional[Tensor]) -> str:
    """The role of one input: the op's positional role, corrected by whether the tensor is constant.

    A weight position fed at run time (attention's K and V) is data; a data position fed by a constant
    (an embedding table, a constant addend) is a weight when it has more than one float or quantized
    element, else an operand (scalars such as epsilon or an exponent are constants, not parameters).
    """
    if tensor is None:
        return OPERAND
    if position_role in (WEIGHT, BIAS, BUFFER):
        return position_role if tensor.is_constant else DATA
    if position_role is not None and position_role != DATA:
        return position_role
    if not tensor.is_constant:
        return DATA
    learnable_dtype = tensor.dtype in FLOAT_DTYPES or tensor.dtype in QUANTIZED_DTYPES
    return WEIGHT if learnable_dtype and (tensor.elements or 0) > 1 else OPERAND



def same_pads(in_dims: Tuple[Dim, ...], out_dims: Tuple[Dim, ...], kernel: List[int], strides: List[int],
              dilations: List[int], extra_at_end: bool = True) -> Optional[List[int]]:
    """Explicit pads [begins..., ends...] of "same" padding, or None while a spatial dim is unknown.

    The odd pixel goes at the end (ONNX SAME_UPPER, TFLite and Keras SAME) unless `extra_at_end` is
    False (ONNX SAME_LOWER).
    """
    if not all(isinstance(d, int) for d in tuple(in_dims) + tuple(out_dims)):
        return None
    begins, ends = [], []
    for size_in, size_out, k, s, d in zip(in_dims, out_dims, kernel, strides, dilations):
        total = max((int(size_out) - 1) * s + (k - 1) * d + 1 - int(size_in), 0)
        small = total // 2
        begins.append(small if extra_at_end else total - small)
        ends.append(total - begins[-1])
    return begins + ends
