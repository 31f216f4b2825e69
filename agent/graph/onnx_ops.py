"""ONNX op types (default and com.microsoft domains) → canonical layer kind and input roles.

The kinds are the names the cost formulas in `agent.profile.costs` know; an op missing here is
reported as unknown, never counted as zero. Role tables give the meaning of each input position.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from agent.graph.model import BIAS, BUFFER, DATA, OPERAND, QUANT, WEIGHT

Roles = Tuple[Optional[str], ...]

CONV_ROLES: Roles = (DATA, WEIGHT, BIAS)
OPERANDS_AFTER_DATA: Roles = (DATA, OPERAND, OPERAND, OPERAND, OPERAND, OPERAND)
QLINEAR_UNARY: Roles = (DATA, QUANT, QUANT, QUANT, QUANT)
QLINEAR_BINARY: Roles = (DATA, QUANT, QUANT, DATA, QUANT, QUANT, QUANT, QUANT)
RECURRENT: Roles = (DATA, WEIGHT, WEIGHT, BIAS, OPERAND, DATA, DATA, WEIGHT)

# op type → (kind, positional roles). Ops without a roles entry resolve each input by constness.
OPS: Dict[str, Tuple[str, Roles]] = {
    "Conv": ("conv", CONV_ROLES),
    "FusedConv": ("conv", (DATA, WEIGHT, BIAS, DATA)),
    "QLinearConv": ("conv", (DATA, QUANT, QUANT, WEIGHT, QUANT, QUANT, QUANT, QUANT, BIAS)),
    "ConvInteger": ("conv", (DATA, WEIGHT, QUANT, QUANT)),
    "ConvTranspose": ("conv_transpose", CONV_ROLES),
    "Gemm": ("matmul", CONV_ROLES),
    "MatMul": ("matmul", (DATA, WEIGHT)),
    "FusedMatMul": ("matmul", (DATA, WEIGHT)),
    "QLinearMatMul": ("matmul", (DATA, QUANT, QUANT, WEIGHT, QUANT, QUANT, QUANT, QUANT)),
    "MatMulInteger": ("matmul", (DATA, WEIGHT, QUANT, QUANT)),
    "MatMulIntegerToFloat": ("matmul", (DATA, WEIGHT, QUANT, QUANT, QUANT, QUANT, BIAS)),
    "MaxPool": ("pool", (DATA,)), "AveragePool": ("pool", (DATA,)), "LpPool": ("pool", (DATA,)),
    "GlobalMaxPool": ("pool", (DATA,)), "GlobalAveragePool": ("pool", (DATA,)),
    "GlobalLpPool": ("pool", (DATA,)),
    "QLinearAveragePool": ("pool", QLINEAR_UNARY), "QLinearGlobalAveragePool": ("pool", QLINEAR_UNARY),
    "BatchNormalization": ("batchnorm", (DATA, WEIGHT, BIAS, BUFFER, BUFFER)),
    "LayerNormalization": ("layernorm", CONV_ROLES), "InstanceNormalization": ("layernorm", CONV_ROLES),
    "GroupNormalization": ("layernorm", CONV_ROLES), "MeanVarianceNormalization": ("layernorm", (DATA,)),
    "LpNormalization": ("l2norm", (DATA,)), "LRN": ("lrn", (DATA,)),
    "Softmax": ("softmax", (DATA,)), "LogSoftmax": ("softmax", (DATA,)),
    "Resize": ("resize", OPERANDS_AFTER_DATA), "Upsample": ("resize", OPERANDS_AFTER_DATA),
    "LSTM": ("recurrent", RECURRENT), "GRU": ("recurrent", RECURRENT), "RNN": ("recurrent", RECURRENT),
    "DynamicQuantizeLSTM": ("recurrent", RECURRENT + (QUANT, QUANT, QUANT, QUANT)),
    "QuantizeLinear": ("quantize", (DATA, QUANT, QUANT)),
    "DynamicQuantizeLinear": ("quantize", (DATA,)),
    "DequantizeLinear": ("dequantize", (DATA, QUANT, QUANT)),
    "If": ("control_flow", ()), "Loop": ("control_flow", ()), "Scan": ("control_flow", ()),
    "SequenceMap": ("control_flow", ()),
    "QLinearAdd": ("add", QLINEAR_BINARY), "QLinearMul": ("mul", QLINEAR_BINARY),
    "QLinearSigmoid": ("sigmoid", QLINEAR_UNARY), "QLinearLeakyRelu": ("leaky_relu", QLINEAR_UNARY),
    "QLinearConcat": ("data", (QUANT, QUANT)),
    "PRelu": ("prelu", (DATA, WEIGHT)),
    "Clip": ("clip", (DATA, OPERAND, OPERAND)),
    "DynamicQuantizeMatMul": ("matmul", (DATA, WEIGHT, QUANT, QUANT, BIAS)),
    "QGemm": ("matmul", (DATA, QUANT, QUANT, WEIGHT, QUANT, QUANT, BIAS, QUANT, QUANT)),
    "FusedGemm": ("matmul", CONV_ROLES),
    "MatMulNBits": ("matmul", (DATA, WEIGHT, QUANT, QUANT, OPERAND, BIAS)),
    "QAttention": ("attention_packed", (DATA, WEIGHT, BIAS, QUANT, QUANT, OPERAND, QUANT, QUANT, DATA)),
    "GroupQueryAttention": ("attention", (DATA, DATA, DATA, DATA, DATA, OPERAND, OPERAND)),
    "EmbedLayerNormalization": ("layernorm", (OPERAND, OPERAND, WEIGHT, WEIGHT, WEIGHT, WEIGHT, BIAS, OPERAND)),
    "Einsum": ("einsum", ()),
    "SkipLayerNormalization": ("layernorm", (DATA, DATA, WEIGHT, BIAS, BIAS)),
    "SkipSimplifiedLayerNormalization": ("layernorm", (DATA, DATA, WEIGHT, BIAS)),
    "SimplifiedLayerNormalization": ("layernorm", (DATA, WEIGHT)), "RMSNormalization": ("layernorm", (DATA, WEIGHT)),
    # ONNX (opset 23) and com.microsoft MultiHeadAttention: Q, K, V already projected.
    "Attention": ("attention", (DATA, DATA, DATA, OPERAND, DATA, DATA)),
    "MultiHeadAttention": ("attention", (DATA, DATA, DATA, BIAS, OPERAND, OPERAND, DATA, DATA)),
    # com.microsoft Attention: one input, packed Q/K/V weights [C, Q + K + V] and bias.
    "com.microsoft:Attention": ("attention_packed", (DATA, WEIGHT, BIAS, OPERAND, DATA, OPERAND)),
}

REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")
DATA_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Split", "Slice", "Gather",
            "GatherElements", "GatherND", "Pad", "Tile", "Expand", "Identity", "Cast", "CastLike",
            "Shape", "Size", "ConstantOfShape", "Dropout", "DepthToSpace", "SpaceToDepth",
            "ScatterND", "ScatterElements", "Range", "OneHot", "NonZero", "Trilu", "Compress",
            "ReverseSequence", "EyeLike", "SplitToSequence", "ConcatFromSequence")
# Element-wise ops whose kind is their own function name (costs.ELEMENTWISE holds FLOPs/element).
ELEMENTWISE_OPS = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min",
    "Sum": "add", "Mean": "add", "Mod": "mod", "Equal": "compare", "Less": "compare",
    "Greater": "compare", "LessOrEqual": "compare", "GreaterOrEqual": "compare", "And": "logical",
    "Or": "logical", "Xor": "logical", "Not": "logical", "Where": "where", "Relu": "relu",
    "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSigmoid": "hard_sigmoid",
    "HardSwish": "hard_swish", "Elu": "elu", "Selu": "elu", "Celu": "elu", "Softplus": "softplus",
    "Softsign": "softsign", "Gelu": "gelu", "FastGelu": "gelu", "BiasGelu": "gelu", "QuickGelu": "swish",
    "Mish": "mish", "ThresholdedRelu": "relu", "Exp": "unary", "Log": "unary", "Sqrt": "unary",
    "Reciprocal": "reciprocal", "Abs": "unary", "Neg": "unary", "Floor": "unary", "Ceil": "unary",
    "Round": "unary", "Sign": "unary", "Erf": "unary", "Sin": "unary", "Cos": "unary", "Tan": "unary",
    "IsNaN": "compare", "IsInf": "compare",
}
for _op in REDUCE_OPS:
    OPS[_op] = ("reduce", OPERANDS_AFTER_DATA)
for _op in DATA_OPS:
    OPS[_op] = ("data", OPERANDS_AFTER_DATA)
OPS["Concat"] = ("data", ())
for _op, _kind in ELEMENTWISE_OPS.items():
    OPS.setdefault(_op, (_kind, ()))


# Kinds whose first output has the shape and dtype of their first input: lets the reader fill in what
# ONNX shape inference leaves out for ops it does not know (com.microsoft's Gelu, FastGelu...).
SHAPE_PRESERVING = frozenset({"relu", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "elu",
                              "softplus", "softsign", "gelu", "swish", "mish", "unary", "reciprocal",
                              "clip", "prelu", "softmax", "batchnorm", "layernorm", "l2norm", "lrn"})


def kind_and_roles(op_type: str, domain: str = "") -> Tuple[str, Roles]:
    """The canonical kind and positional roles of an ONNX op type (a `domain:op` entry first, for ops
    whose meaning differs by domain); ("unknown", ()) when not known."""
    return OPS.get(f"{domain}:{op_type}", OPS.get(op_type, ("unknown", ())))
