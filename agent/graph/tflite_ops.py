"""TFLite builtin operators → canonical layer kind and input roles (see `agent.graph.onnx_ops`).

Recurrent ops also name their weight matrices (`MATRIX_INPUTS`): the inputs that are multiplied by
the input or hidden vector at every time step, as the TFLite LSTM/RNN kernels number them.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from agent.graph.model import BIAS, DATA, OPERAND, WEIGHT

Roles = Tuple[Optional[str], ...]

CONV: Roles = (DATA, WEIGHT, BIAS)
TRANSPOSE_CONV: Roles = (OPERAND, WEIGHT, DATA, BIAS)
OPERANDS_AFTER_DATA: Roles = (DATA, OPERAND, OPERAND, OPERAND)
# One LSTM direction: 1-8 gate matrices, 9-11 peepholes, 12-15 gate biases, 16/17 projection.
LSTM_DIRECTION: Roles = (WEIGHT,) * 11 + (BIAS,) * 4 + (WEIGHT, BIAS)
LSTM: Roles = (DATA,) + LSTM_DIRECTION + (DATA, DATA) + (WEIGHT,) * 4
BIDIRECTIONAL_LSTM: Roles = (DATA,) + LSTM_DIRECTION * 2 + (DATA,) * 5 + (WEIGHT,) * 8
RNN: Roles = (DATA, WEIGHT, WEIGHT, BIAS, DATA)
BIDIRECTIONAL_RNN: Roles = RNN + (WEIGHT, WEIGHT, BIAS, DATA, DATA, WEIGHT, WEIGHT)

MATRIX_INPUTS: Dict[str, Tuple[int, ...]] = {
    "LSTM": tuple(range(1, 9)) + (16,),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)) + (16,),
    "BIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)) + (16,) + tuple(range(18, 26)) + (33,)
    + tuple(range(40, 48)),
    "RNN": (1, 2), "UNIDIRECTIONAL_SEQUENCE_RNN": (1, 2),
    "BIDIRECTIONAL_SEQUENCE_RNN": (1, 2, 5, 6, 10, 11),
    "SVDF": (1, 2),  # weights_feature [filters, input], weights_time [filters, memory]
}

# The cell-to-gate (peephole) weights of each LSTM direction, as the TFLite kernels number them.
PEEPHOLE_INPUTS: Dict[str, Tuple[int, ...]] = {
    "LSTM": (9, 10, 11), "UNIDIRECTIONAL_SEQUENCE_LSTM": (9, 10, 11),
    "BIDIRECTIONAL_SEQUENCE_LSTM": (9, 10, 11, 26, 27, 28),
}

OPS: Dict[str, Tuple[str, Roles]] = {
    "CONV_2D": ("conv", CONV), "DEPTHWISE_CONV_2D": ("conv", CONV), "CONV_3D": ("conv", CONV),
    "TRANSPOSE_CONV": ("conv_transpose", TRANSPOSE_CONV),
    "CONV_3D_TRANSPOSE": ("conv_transpose", TRANSPOSE_CONV),
    "FULLY_CONNECTED": ("matmul", CONV), "BATCH_MATMUL": ("matmul", (DATA, WEIGHT)),
    "AVERAGE_POOL_2D": ("pool", (DATA,)), "MAX_POOL_2D": ("pool", (DATA,)), "L2_POOL_2D": ("pool", (DATA,)),
    "SOFTMAX": ("softmax", (DATA,)), "LOG_SOFTMAX": ("softmax", (DATA,)),
    "L2_NORMALIZATION": ("l2norm", (DATA,)), "LOCAL_RESPONSE_NORMALIZATION": ("lrn", (DATA,)),
    "RESIZE_BILINEAR": ("resize", OPERANDS_AFTER_DATA),
    "RESIZE_NEAREST_NEIGHBOR": ("resize", OPERANDS_AFTER_DATA),
    "QUANTIZE": ("quantize", (DATA,)), "DEQUANTIZE": ("dequantize", (DATA,)),
    "LSTM": ("recurrent", LSTM), "UNIDIRECTIONAL_SEQUENCE_LSTM": ("recurrent", LSTM),
    "BIDIRECTIONAL_SEQUENCE_LSTM": ("recurrent", BIDIRECTIONAL_LSTM),
    "RNN": ("recurrent", RNN), "UNIDIRECTIONAL_SEQUENCE_RNN": ("recurrent", RNN),
    "BIDIRECTIONAL_SEQUENCE_RNN": ("recurrent", BIDIRECTIONAL_RNN),
    "SVDF": ("recurrent", (DATA, WEIGHT, WEIGHT, BIAS, DATA)),
    "WHILE": ("control_flow", ()), "IF": ("control_flow", ()), "CALL_ONCE": ("control_flow", ()),
    "PRELU": ("prelu", (DATA, WEIGHT)),
    "CONCATENATION": ("data", ()), "PACK": ("data", ()), "SPLIT": ("data", (OPERAND, DATA)),
    "EMBEDDING_LOOKUP": ("data", (OPERAND, DATA)),
}
REDUCE_OPS = {"MEAN": "mean", "SUM": "sum", "REDUCE_MAX": "max", "REDUCE_MIN": "min",
              "REDUCE_PROD": "prod", "REDUCE_ANY": "max", "REDUCE_ALL": "min", "ARG_MAX": "argmax",
              "ARG_MIN": "argmin"}
DATA_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "SPLIT_V", "UNPACK", "SLICE",
            "STRIDED_SLICE", "GATHER", "GATHER_ND", "PAD", "PADV2", "MIRROR_PAD", "TILE", "BROADCAST_TO",
            "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "SHAPE",
            "FILL", "ZEROS_LIKE", "ONES_LIKE", "REVERSE_V2", "CAST", "RANK", "SCATTER_ND", "DENSIFY")
ELEMENTWISE_OPS = {
    "ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "POW": "pow", "MAXIMUM": "max",
    "MINIMUM": "min", "SQUARED_DIFFERENCE": "squared_difference", "FLOOR_DIV": "div",
    "FLOOR_MOD": "mod", "ADD_N": "add", "RELU": "relu", "RELU6": "clip", "RELU_N1_TO_1": "clip",
    "RELU_0_TO_1": "clip", "LEAKY_RELU": "leaky_relu", "LOGISTIC": "sigmoid", "TANH": "tanh",
    "HARD_SWISH": "hard_swish", "GELU": "gelu", "ELU": "elu", "EXP": "unary", "LOG": "unary",
    "SQRT": "unary", "RSQRT": "reciprocal", "ABS": "unary", "NEG": "unary", "FLOOR": "unary",
    "CEIL": "unary", "ROUND": "unary", "SIN": "unary", "COS": "unary", "SIGN": "unary",
    "SQUARE": "square", "LOGICAL_AND": "logical", "LOGICAL_OR": "logical", "LOGICAL_NOT": "logical",
    "EQUAL": "compare", "NOT_EQUAL": "compare", "LESS": "compare", "LESS_EQUAL": "compare",
    "GREATER": "compare", "GREATER_EQUAL": "compare", "SELECT": "where", "SELECT_V2": "where",
}
for _op, _reduce in REDUCE_OPS.items():
    OPS[_op] = ("reduce", OPERANDS_AFTER_DATA)
for _op in DATA_OPS:
    OPS[_op] = ("data", OPERANDS_AFTER_DATA)
for _op, _kind in ELEMENTWISE_OPS.items():
    OPS.setdefault(_op, (_kind, ()))

# ActivationFunctionType → the element-wise kind a fused activation adds.
FUSED_ACTIVATIONS = {1: "relu", 2: "clip", 3: "clip", 4: "tanh", 5: "unary"}


def kind_and_roles(op_name: str) -> Tuple[str, Roles]:
    """The canonical kind and positional roles of a TFLite builtin; ("unknown", ()) when not known."""
    return OPS.get(op_name, ("unknown", ()))
