"""Each per-layer formula against a hand count, on one-op ONNX models read by the real reader."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.nets import Spec, write_onnx

from agent.graph.onnx_ops import OPS as ONNX_OPS
from agent.graph.tflite_ops import FUSED_ACTIVATIONS
from agent.graph.tflite_ops import OPS as TFLITE_OPS
from agent.profile.costs import CELL, ELEMENTWISE, KNOWN_KINDS, LayerCost
from agent.profile.static import Profile, static_profile


def profile_of(tmp_path: Path, nodes: List, inputs: Dict[str, Spec], constants: Dict[str, Spec],
               outputs: List[str], domains: Tuple[str, ...] = ()) -> Profile:
    """The static profile of a model of `nodes` (see nets.write_onnx)."""
    return static_profile(write_onnx(tmp_path / "model.onnx", nodes, inputs, constants, outputs, domains))


def one_layer(tmp_path: Path, op: str, inputs: Dict[str, Spec], constants: Dict[str, Spec],
              domain: Optional[str] = None, **attributes: object) -> LayerCost:
    """The cost of a model holding the single node `op` over inputs then constants, in that order."""
    node = helper.make_node(op, list(inputs) + list(constants), ["y"], domain=domain, **attributes)
    profile = profile_of(tmp_path, [node], inputs, constants, ["y"], (domain,) if domain else ())
    assert len(profile.layers) == 1
    return profile.layers[0]


F32 = "float32"


def test_conv_with_bias_counts_macs_flops_params_and_bytes(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "Conv", {"x": ((1, 8, 32, 32), F32)},
                     {"w": ((16, 8, 3, 3), F32), "b": ((16,), F32)}, pads=[1, 1, 1, 1])
    out = 16 * 32 * 32
    assert cost.macs == out * 8 * 9 == 1_179_648
    assert cost.flops == 2 * cost.macs + out  # one add per output for the bias
    assert cost.mults == cost.macs
    assert cost.params == 16 * 8 * 9 + 16 and cost.param_bytes == 4 * cost.params
    assert cost.bytes_read == 4 * (8 * 32 * 32 + cost.params)
    assert cost.bytes_written == 4 * out
    assert cost.intensity == pytest.approx(cost.flops / (cost.bytes_read + cost.bytes_written))


@pytest.mark.parametrize("group, strides, dilations, pads, out_hw", [
    (4, [1, 1], [1, 1], [1, 1, 1, 1], 32),   # grouped
    (8, [1, 1], [1, 1], [1, 1, 1, 1], 32),   # depthwise (group == channels)
    (1, [1, 1], [2, 2], [2, 2, 2, 2], 32),   # dilated: same MACs as a dense 3x3
    (1, [2, 2], [1, 1], [1, 1, 1, 1], 16),   # strided
])
def test_conv_variants(tmp_path: Path, group: int, strides: List[int], dilations: List[int],
                       pads: List[int], out_hw: int) -> None:
    channels_out = 8 if group == 8 else 16
    cost = one_layer(tmp_path, "Conv", {"x": ((1, 8, 32, 32), F32)},
                     {"w": ((channels_out, 8 // group, 3, 3), F32)},
                     group=group, strides=strides, dilations=dilations, pads=pads)
    assert cost.macs == channels_out * out_hw * out_hw * (8 // group) * 9
    assert cost.flops == 2 * cost.macs  # no bias


def test_conv_transpose_counts_per_input_element(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "ConvTranspose", {"x": ((1, 8, 16, 16), F32)}, {"w": ((8, 4, 4, 4), F32)},
                     strides=[2, 2], pads=[1, 1, 1, 1])
    assert cost.bytes_written == 4 * 4 * 32 * 32  # output 1x4x32x32
    assert cost.macs == 8 * 16 * 16 * 4 * 16      # every input element meets C_out x k x k weights


def test_gemm_with_transposed_weight_and_bias(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "Gemm", {"a": ((4, 64), F32)}, {"b": ((128, 64), F32), "c": ((128,), F32)},
                     transB=1)
    assert cost.macs == 4 * 128 * 64
    assert cost.flops == 2 * cost.macs + 4 * 128
    assert cost.params == 128 * 64 + 128


def test_attention_from_matmul_and_softmax(tmp_path: Path) -> None:
    """Q.K^T, softmax, .V for 2 heads, 8 tokens, 4 dims: two activation-by-activation MatMuls."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    spec = ((1, 2, 8, 4), F32)
    profile = profile_of(tmp_path, nodes, {"q": spec, "k": spec, "v": spec}, {}, ["y"])
    by_op = {c.name.split("_")[0]: c for c in profile.layers}
    matmuls = [c for c in profile.layers if c.op == "MatMul"]
    assert [c.macs for c in matmuls] == [2 * 8 * 8 * 4, 2 * 8 * 4 * 8]
    assert all(c.params == 0 for c in matmuls)  # K and V are activations, not weights
    assert by_op["Softmax"].flops == 5 * 2 * 8 * 8 and by_op["Transpose"].macs == 0
    assert by_op["Transpose"].bytes_read == by_op["Transpose"].bytes_written == 4 * 64


@pytest.mark.parametrize("op, attributes, flops, mults", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 8 * 16 * 16 * 8, 0),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, 8 * 16 * 16 * 4, 8 * 16 * 16),
    ("GlobalAveragePool", {}, 8 * 32 * 32, 8),
    ("GlobalMaxPool", {}, 8 * (32 * 32 - 1), 0),
])
def test_pooling(tmp_path: Path, op: str, attributes: Dict, flops: int, mults: int) -> None:
    cost = one_layer(tmp_path, op, {"x": ((1, 8, 32, 32), F32)}, {}, **attributes)
    assert (cost.macs, cost.flops, cost.mults) == (0, flops, mults)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSwish", "Gelu", "Exp"])
def test_activations_cost_their_table_entry_per_element(tmp_path: Path, op: str) -> None:
    cost = one_layer(tmp_path, op, {"x": ((2, 3, 5), F32)}, {}, domain="com.microsoft" if op == "Gelu" else None)
    flops, mults = ELEMENTWISE[ONNX_OPS[op][0]]
    assert (cost.macs, cost.flops, cost.mults) == (0, 30 * flops, 30 * mults)


def test_binary_with_broadcast_constant_counts_outputs_and_the_constant_as_a_weight(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "Mul", {"x": ((1, 8, 4, 4), F32)}, {"s": ((8, 1, 1), F32)})
    assert (cost.flops, cost.mults, cost.params) == (128, 128, 8)


def test_variadic_sum_counts_one_add_per_extra_operand(tmp_path: Path) -> None:
    spec = ((4, 4), F32)
    node = helper.make_node("Sum", ["a", "b", "c"], ["y"])
    cost = profile_of(tmp_path, [node], {"a": spec, "b": spec, "c": spec}, {}, ["y"]).layers[0]
    assert cost.flops == 2 * 16


def test_scalar_constants_are_operands_not_parameters(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "Add", {"x": ((4, 4), F32)}, {"eps": ((), F32)})
    assert cost.params == 0 and cost.flops == 16


def test_batchnorm_separates_learnable_params_from_running_statistics(tmp_path: Path) -> None:
    stats = {name: ((8,), F32) for name in ("gamma", "beta", "mean", "var")}
    cost = one_layer(tmp_path, "BatchNormalization", {"x": ((1, 8, 4, 4), F32)}, stats)
    assert (cost.flops, cost.mults) == (2 * 128, 128)
    assert (cost.params, cost.buffers, cost.buffer_bytes) == (16, 16, 64)


@pytest.mark.parametrize("op, constants, attributes", [
    ("LayerNormalization", {"g": ((16,), F32), "b": ((16,), F32)}, {"axis": -1}),
    ("InstanceNormalization", {"g": ((5,), F32), "b": ((5,), F32)}, {}),
])
def test_normalisations_cost_seven_flops_per_element(tmp_path: Path, op: str, constants: Dict,
                                                     attributes: Dict) -> None:
    cost = one_layer(tmp_path, op, {"x": ((2, 5, 16), F32)}, constants, **attributes)
    assert (cost.flops, cost.mults) == (7 * 160, 3 * 160)
    assert cost.params == sum(int(np.prod(shape)) for shape, _ in constants.values())


@pytest.mark.parametrize("mode, points", [("nearest", 0), ("linear", 4), ("cubic", 16)])
def test_resize_interpolates_over_the_resized_axes(tmp_path: Path, mode: str, points: int) -> None:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[scales])
    path = tmp_path / "resize.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    cost = static_profile(path).layers[0]
    out = 3 * 16 * 16
    assert cost.bytes_written == 4 * out
    assert (cost.flops, cost.mults) == ((2 * points - 1) * out if points else 0, points * out)
    assert cost.params == 0  # the scales are an operand


def test_reduce_mean_counts_adds_and_one_division_per_output(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "ReduceMean", {"x": ((1, 8, 4, 4), F32)}, {}, axes=[2, 3])
    assert (cost.flops, cost.mults) == (128 - 8 + 8, 8)


@pytest.mark.parametrize("op, inputs, attributes", [
    ("Concat", {"a": ((1, 4, 8), F32), "b": ((1, 4, 8), F32)}, {"axis": 1}),
    ("Transpose", {"a": ((1, 4, 8), F32)}, {"perm": [0, 2, 1]}),
    ("Flatten", {"a": ((1, 4, 8), F32)}, {}),
])
def test_data_movement_has_zero_work_and_real_bytes(tmp_path: Path, op: str, inputs: Dict,
                                                    attributes: Dict) -> None:
    cost = one_layer(tmp_path, op, inputs, {}, **attributes)
    assert (cost.macs, cost.flops, cost.mults) == (0, 0, 0)
    assert cost.bytes_read == cost.bytes_written == 4 * 32 * len(inputs)


def test_bidirectional_lstm_counts_both_directions_every_step(tmp_path: Path) -> None:
    steps, batch, features, hidden = 5, 2, 10, 16
    cost = one_layer(tmp_path, "LSTM", {"x": ((steps, batch, features), F32)},
                     {"w": ((2, 4 * hidden, features), F32), "r": ((2, 4 * hidden, hidden), F32),
                      "b": ((2, 8 * hidden), F32)}, hidden_size=hidden, direction="bidirectional")
    assert cost.macs == steps * batch * 2 * 4 * hidden * (features + hidden)
    units = steps * batch * 2 * hidden
    assert cost.flops == 2 * cost.macs + units * CELL["lstm"][0]
    assert cost.params == 2 * 4 * hidden * (features + hidden) + 2 * 8 * hidden


def test_gru_has_three_gates(tmp_path: Path) -> None:
    cost = one_layer(tmp_path, "GRU", {"x": ((7, 1, 12), F32)},
                     {"w": ((1, 3 * 8, 12), F32), "r": ((1, 3 * 8, 8), F32)}, hidden_size=8)
    assert cost.macs == 7 * 3 * 8 * (12 + 8)
    assert cost.flops == 2 * cost.macs + 7 * 8 * CELL["gru"][0]


def test_quantized_conv_is_int8_work_with_int8_bytes(tmp_path: Path) -> None:
    scalars = {"xs": ((), F32), "xz": ((), "int8"), "ws": ((), F32), "wz": ((), "int8"),
               "ys": ((), F32), "yz": ((), "int8")}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=[1, 1, 1, 1])
    constants = dict(scalars, w=((16, 8, 3, 3), "int8"), b=((16,), "int32"))
    cost = profile_of(tmp_path, [node], {"x": ((1, 8, 8, 8), "int8")}, constants, ["y"]).layers[0]
    assert cost.macs == 16 * 8 * 8 * 8 * 9 and cost.dtype == "int8"
    assert cost.params == 16 * 8 * 9 + 16 and cost.param_bytes == 16 * 8 * 9 + 4 * 16  # int32 bias
    assert cost.bytes_written == 16 * 8 * 8  # one byte per int8 output


@pytest.mark.parametrize("op, a, b, macs, outputs", [
    ("MatMulInteger", ((3, 32), "uint8"), ((32, 5), "int8"), 3 * 5 * 32, 3 * 5),
    ("ConvInteger", ((1, 4, 6, 6), "uint8"), ((2, 4, 3, 3), "int8"), 2 * 4 * 4 * 4 * 9, 2 * 4 * 4),
])
def test_integer_ops_read_int8_and_write_int32(tmp_path: Path, op: str, a: Spec, b: Spec, macs: int,
                                               outputs: int) -> None:
    cost = one_layer(tmp_path, op, {"a": a}, {"b": b})
    assert cost.macs == macs
    assert cost.param_bytes == int(np.prod(b[0]))  # int8 weights: one byte each
    assert cost.bytes_written == 4 * outputs       # int32 accumulators


def test_dynamic_quantize_lstm_counts_int8_weights(tmp_path: Path) -> None:
    """com.microsoft's DynamicQuantizeLSTM: weights int8 [dirs, in, 4H], counted like an LSTM."""
    names = ["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"]
    node = helper.make_node("DynamicQuantizeLSTM", names, ["y"], domain="com.microsoft", hidden_size=16)
    constants = {"w": ((1, 10, 64), "int8"), "r": ((1, 16, 64), "int8"), "ws": ((1,), F32),
                 "wz": ((1,), "int8"), "rs": ((1,), F32), "rz": ((1,), "int8")}
    profile = profile_of(tmp_path, [node], {"x": ((5, 2, 10), F32)}, constants, ["y"], ("com.microsoft",))
    cost = profile.layers[0]
    assert cost.macs == 5 * 2 * (10 * 64 + 16 * 64)
    assert cost.param_bytes == 10 * 64 + 16 * 64  # one byte per weight


def test_quantize_and_dequantize_alone_are_real_work(tmp_path: Path) -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    profile = profile_of(tmp_path, nodes, {"x": ((4, 8), F32)}, {"s": ((), F32), "z": ((), "int8")}, ["y"])
    quantize, dequantize = profile.layers
    assert (quantize.flops, quantize.bytes_written) == (5 * 32, 32)
    assert (dequantize.flops, dequantize.bytes_read) == (2 * 32, 32 + 4 + 1)


def test_every_kind_the_readers_produce_has_a_formula() -> None:
    kinds = {kind for kind, _ in ONNX_OPS.values()} | {kind for kind, _ in TFLITE_OPS.values()}
    kinds |= set(FUSED_ACTIVATIONS.values())
    assert kinds <= KNOWN_KINDS, kinds - KNOWN_KINDS
