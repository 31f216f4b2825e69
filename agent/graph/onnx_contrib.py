"""Output shapes of ONNX Runtime's com.microsoft ops, which ONNX shape inference does not know.

Without them every layer after a DynamicQuantizeLSTM or a fused Attention loses its shapes. Each rule
reads the op's input shapes and attributes (the contrib op's documented semantics) and returns the
shape of each output, or None while an input shape is not known.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

Dims = Tuple[int, ...]
Known = Sequence[Optional[Dims]]  # each input's dims when all are known, else None
Rule = Callable[[Known, Dict[str, Any]], List[Dims]]
# Contrib ops whose first output has the shape and type of their first input.
SAME_AS_INPUT = frozenset({"Gelu", "FastGelu", "BiasGelu", "QuickGelu", "SkipLayerNormalization",
                           "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "BiasAdd",
                           "BiasDropout", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
                           "RotaryEmbedding"})


def _recurrent(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """DynamicQuantizeLSTM: X [T, B, I] → Y [T, D, B, H], Y_h and Y_c [D, B, H]."""
    data = shapes[0]
    if data is None or "hidden_size" not in attributes:
        return []
    hidden = int(attributes["hidden_size"])
    directions = 2 if attributes.get("direction", b"") in (b"bidirectional", "bidirectional") else 1
    return [(data[0], directions, data[1], hidden), (directions, data[1], hidden), (directions, data[1], hidden)]


def _matmul(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """DynamicQuantizeMatMul, MatMulIntegerToFloat: A [..., M, K] @ B [K, N] → [..., M, N]."""
    left, right = shapes[0], shapes[1] if len(shapes) > 1 else None
    return [] if left is None or right is None else [left[:-1] + right[-1:]]


def _attention(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """Attention: input [B, S, C] with packed weights [C, Q + K + V] → [B, S, V]."""
    data, weights = shapes[0], shapes[1] if len(shapes) > 1 else None
    if data is None or weights is None:
        return []
    sizes = [int(s) for s in attributes.get("qkv_hidden_sizes", [])]
    return [data[:2] + (sizes[2] if len(sizes) == 3 else weights[1] // 3,)]


def _multi_head(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """MultiHeadAttention: query [B, S, D], value [B, L, Dv] (or [B, N, L, Hv]) → [B, S, Dv]."""
    query = shapes[0]
    value = shapes[2] if len(shapes) > 2 else None
    if query is None or len(query) != 3:
        return []
    if value is not None and len(value) in (3, 4):
        return [query[:2] + ((value[-1],) if len(value) == 3 else (value[1] * value[3],))]
    return [query]


def _broadcast(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """QLinearAdd, QLinearMul: the NumPy broadcast of A (input 0) and B (input 3)."""
    left, right = shapes[0], shapes[3] if len(shapes) > 3 else None
    if left is None or right is None:
        return []
    rank = max(len(left), len(right))
    left, right = (1,) * (rank - len(left)) + left, (1,) * (rank - len(right)) + right
    return [tuple(max(a, b) for a, b in zip(left, right))]


def _concat(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """QLinearConcat: inputs Y scale, Y zero point, then (X, scale, zero point) per operand."""
    operands = shapes[2::3]
    if not operands or any(dims is None for dims in operands):
        return []
    first = operands[0] or ()
    axis = int(attributes.get("axis", 0)) % len(first)
    total = sum((dims or ())[axis] for dims in operands)
    return [first[:axis] + (total,) + first[axis + 1:]]


def _global_pool(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """QLinearGlobalAveragePool: [N, C, spatial...] → [N, C, 1...] (channels_last: [N, 1..., C])."""
    data = shapes[0]
    if data is None:
        return []
    if attributes.get("channels_last"):
        return [data[:1] + (1,) * (len(data) - 2) + data[-1:]]
    return [data[:2] + (1,) * (len(data) - 2)]


def _gemm(weight: int) -> Rule:
    """FusedGemm (B is input 1), QGemm (input 3): A [M, K] (transA: [K, M]) times B [K, N] (transB:
    [N, K]) → [M, N]."""
    def rule(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
        left, right = shapes[0], shapes[weight] if len(shapes) > weight else None
        if left is None or right is None:
            return []
        rows = left[1] if attributes.get("transA") else left[0]
        columns = right[0] if attributes.get("transB") else right[1]
        return [(rows, columns)]
    return rule


def _conv(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """FusedConv: X [N, C, spatial...], W [C_out, C/group, k...] → [N, C_out, out...], each out dim
    ⌊(in + pads − dilation·(k − 1) − 1) / stride⌋ + 1 (SAME auto-padding: ⌈in / stride⌉)."""
    data, weight = shapes[0], shapes[1] if len(shapes) > 1 else None
    if data is None or weight is None:
        return []
    rank = len(data) - 2
    kernel = [int(k) for k in attributes.get("kernel_shape", weight[2:])]
    strides = [int(s) for s in attributes.get("strides", [1] * rank)]
    dilations = [int(d) for d in attributes.get("dilations", [1] * rank)]
    pads = [int(p) for p in attributes.get("pads", [0] * (2 * rank))]
    same = str(attributes.get("auto_pad", b"NOTSET")).find("SAME") >= 0
    spatial = tuple(-(-size // stride) if same
                    else (size + pads[i] + pads[i + rank] - dilation * (k - 1) - 1) // stride + 1
                    for i, (size, k, stride, dilation) in enumerate(zip(data[2:], kernel, strides, dilations)))
    return [data[:1] + weight[:1] + spatial]


def _matmul_nbits(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """MatMulNBits: A [..., K] times packed B of N columns → [..., N]."""
    data = shapes[0]
    return [] if data is None or "N" not in attributes else [data[:-1] + (int(attributes["N"]),)]


def _embedding(shapes: Known, attributes: Dict[str, Any]) -> List[Dims]:
    """EmbedLayerNormalization: token ids [B, S], word embeddings [V, H] → [B, S, H] and mask [B]."""
    ids, words = shapes[0], shapes[2] if len(shapes) > 2 else None
    return [] if ids is None or words is None else [ids + words[1:], ids[:1]]


RULES: Dict[str, Rule] = {
    "DynamicQuantizeLSTM": _recurrent, "DynamicQuantizeMatMul": _matmul, "MatMulIntegerToFloat": _matmul,
    "Attention": _attention, "QAttention": _attention, "MultiHeadAttention": _multi_head,
    "GroupQueryAttention": _multi_head, "QLinearAdd": _broadcast, "QLinearMul": _broadcast,
    "QLinearConcat": _concat, "QLinearGlobalAveragePool": _global_pool, "QGemm": _gemm(3),
    "FusedGemm": _gemm(1), "FusedConv": _conv, "MatMulNBits": _matmul_nbits, "EmbedLayerNormalization": _embedding,
}
# Which input's element type each rule's outputs have (None: float, the rules' ops that dequantize).
OUTPUT_TYPE_OF_INPUT: Dict[str, Optional[int]] = {"QLinearAdd": 0, "QLinearMul": 0, "QLinearConcat": 2,
                                                  "QLinearGlobalAveragePool": 0, "QGemm": 0, "FusedGemm": 0,
                                                  "FusedConv": 0, "MatMulNBits": 0}


def _known(dims: Optional[Tuple[Any, ...]]) -> Optional[Dims]:
    if dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return tuple(int(d) for d in dims)


def contrib_shapes(onnx: Any, node: Any, shapes: Mapping[str, Tuple[Any, ...]]) -> List[Tuple[str, Dims]]:
    """(output name, dims) of each output of a com.microsoft `node` whose shape a rule gives; the
    outputs are float (the rules' ops dequantize) or of the first input's type (`SAME_AS_INPUT`)."""
    if node.domain != "com.microsoft":
        return []
    inputs = [_known(shapes.get(name)) if name else None for name in node.input]
    if node.op_type in SAME_AS_INPUT:
        first = inputs[0] if inputs else None
        result: List[Dims] = [first] if first is not None else []
    elif node.op_type in RULES:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        result = RULES[node.op_type](inputs, attributes)
    else:
        return []
    return [(name, dims) for name, dims in zip(node.output, result) if name]
