"""Recurrent, attention, integer and control-flow ops: our MACs against ONNX Runtime's run of each model.

Each model is small and built here; the reference (tests/support/reference_macs.py) runs it in ONNX
Runtime with profiling and applies the textbook formula to the shapes of every node that ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from support.reference_macs import onnx_reference  # noqa: E402

from agent.graph.onnx import read_onnx  # noqa: E402
from agent.profile.render import control_flow_lines  # noqa: E402
from agent.profile.static import profile_graph  # noqa: E402

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def _weight(name: str, shape: Sequence[int], dtype: type = np.float32) -> onnx.TensorProto:
    values = RNG.standard_normal(shape).astype(np.float32) * 0.1
    return numpy_helper.from_array(values.astype(dtype) if dtype != np.float32 else values, name)


def _save(path: Path, nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[object]], outputs: List[str],
          initializers: Sequence[onnx.TensorProto] = (), opset: int = 17, types: Optional[Dict[str, int]] = None,
          ms: bool = False) -> Path:
    for index, node in enumerate(nodes):  # the reference finds each node's constants by its name
        node.name = node.name or f"{node.op_type}_{index}"
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, (types or {}).get(n, F), list(s))
                                           for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, (types or {}).get(n, F), None) for n in outputs],
                              list(initializers))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return path


def _compare(path: Path, feeds: Dict[str, np.ndarray], values: Optional[Dict[str, np.ndarray]] = None) -> int:
    reference, _ = onnx_reference(path, feeds)
    profile = profile_graph(read_onnx(path, {k: list(v.shape) for k, v in feeds.items()}, values))
    assert profile.not_counted() == []
    assert profile.totals()["macs"] == reference
    return reference


def test_gru_and_rnn_in_both_directions_count_gates_times_input_plus_hidden(tmp_path: Path) -> None:
    steps, batch, features, hidden = 7, 3, 10, 6
    nodes = [helper.make_node("GRU", ["x", "wg", "rg"], ["yg"], hidden_size=hidden, direction="bidirectional"),
             helper.make_node("RNN", ["x", "wr", "rr"], ["yr"], hidden_size=hidden)]
    weights = [_weight("wg", [2, 3 * hidden, features]), _weight("rg", [2, 3 * hidden, hidden]),
               _weight("wr", [1, hidden, features]), _weight("rr", [1, hidden, hidden])]
    path = _save(tmp_path / "rnn.onnx", nodes, {"x": [steps, batch, features]}, ["yg", "yr"], weights)
    macs = _compare(path, {"x": np.zeros((steps, batch, features), np.float32)})
    assert macs == steps * batch * (2 * 3 + 1) * (features + hidden) * hidden


def test_lstm_batch_first_with_peepholes_reads_steps_and_batch_from_the_layout(tmp_path: Path) -> None:
    batch, steps, features, hidden = 2, 5, 4, 8
    node = helper.make_node("LSTM", ["x", "w", "r", "", "", "", "", "p"], ["y"], hidden_size=hidden, layout=1)
    weights = [_weight("w", [1, 4 * hidden, features]), _weight("r", [1, 4 * hidden, hidden]),
               _weight("p", [1, 3 * hidden])]
    path = _save(tmp_path / "lstm.onnx", [node], {"x": [batch, steps, features]}, ["y"], weights, opset=14)
    # ONNX Runtime's CPU LSTM refuses layout 1, so the reference here is the textbook number itself.
    (lstm,) = profile_graph(read_onnx(path)).layers
    assert lstm.macs == steps * batch * 4 * (features + hidden) * hidden
    units = steps * batch * hidden
    assert lstm.flops == 2 * lstm.macs + units * (30 + 6) and lstm.mults == lstm.macs + units * (6 + 3)
    assert lstm.params == 4 * hidden * (features + hidden) + 3 * hidden


def test_batched_matmul_einsum_and_fused_attention(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["ab"]),
             helper.make_node("Einsum", ["q", "k"], ["qk"], equation="bhqd,bhkd->bhqk"),
             helper.make_node("Attention", ["x", "wqkv", "bqkv"], ["ctx"], domain="com.microsoft", num_heads=2),
             helper.make_node("MultiHeadAttention", ["q3", "k3", "v3"], ["mha"], domain="com.microsoft", num_heads=2)]
    inputs = {"a": [2, 3, 5, 4], "b": [3, 4, 6], "q": [1, 2, 5, 8], "k": [1, 2, 7, 8], "x": [2, 5, 8],
              "q3": [1, 5, 8], "k3": [1, 7, 8], "v3": [1, 7, 4]}
    path = _save(tmp_path / "attention.onnx", nodes, inputs, ["ab", "qk", "ctx", "mha"],
                 [_weight("wqkv", [8, 24]), _weight("bqkv", [24])], ms=True)
    feeds = {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}
    macs = _compare(path, feeds)
    assert macs == 2 * 3 * 5 * 6 * 4 + 2 * 5 * 7 * 8 + (2 * 5 * 8 * 24 + 2 * 2 * 5 * 5 * 8) + (5 * 7 * 8 + 5 * 7 * 4)


def test_dynamic_and_static_integer_ops_count_like_their_float_twins(tmp_path: Path) -> None:
    u8 = TensorProto.UINT8
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
             helper.make_node("ConvInteger", ["iq", "kq"], ["conv"]),
             helper.make_node("QLinearMatMul", ["iq2", "s", "z", "wq2", "s", "z8", "s", "z"], ["qmm"]),
             helper.make_node("QLinearConv", ["iq", "s", "z", "kq8", "s", "z8", "s", "z"], ["qconv"])]
    weights = [numpy_helper.from_array(RNG.integers(-5, 5, (16, 12)).astype(np.uint8), "wq"),
               numpy_helper.from_array(np.array(0, np.uint8), "wz"),
               numpy_helper.from_array(RNG.integers(0, 5, (4, 3, 3, 3)).astype(np.uint8), "kq"),
               numpy_helper.from_array(RNG.integers(-5, 5, (7, 9)).astype(np.int8), "wq2"),
               numpy_helper.from_array(RNG.integers(-5, 5, (4, 3, 3, 3)).astype(np.int8), "kq8"),
               numpy_helper.from_array(np.array(0.1, np.float32), "s"),
               numpy_helper.from_array(np.array(128, np.uint8), "z"),
               numpy_helper.from_array(np.array(0, np.int8), "z8")]
    inputs = {"x": [3, 16], "iq": [1, 3, 8, 8], "iq2": [5, 7]}
    path = _save(tmp_path / "int.onnx", nodes, inputs, ["acc", "conv", "qmm", "qconv"], weights,
                 types={"iq": u8, "iq2": u8, "acc": TensorProto.INT32, "conv": TensorProto.INT32, "qmm": u8,
                        "qconv": u8})
    feeds = {"x": RNG.standard_normal((3, 16)).astype(np.float32),
             "iq": RNG.integers(0, 255, (1, 3, 8, 8)).astype(np.uint8),
             "iq2": RNG.integers(0, 255, (5, 7)).astype(np.uint8)}
    assert _compare(path, feeds) == 3 * 12 * 16 + 2 * (4 * 6 * 6 * 27) + 5 * 9 * 7


def _branch(name: str, weight: str, inner: int) -> onnx.GraphProto:
    node = helper.make_node("MatMul", ["x", weight], [name + "_out"])
    return helper.make_graph([node], name, [], [helper.make_tensor_value_info(name + "_out", F, None)])


def test_an_input_steered_if_folds_with_its_value_else_the_larger_branch_bounds(tmp_path: Path) -> None:
    nodes = [helper.make_node("Equal", ["sr", "sixteen"], ["is16"]),
             helper.make_node("If", ["is16"], ["y"], name="If_0", then_branch=_branch("then", "big", 32),
                              else_branch=_branch("else", "small", 8))]
    weights = [_weight("big", [16, 32]), _weight("small", [16, 32]),
               numpy_helper.from_array(np.array(16000, np.int64), "sixteen")]
    weights[1] = _weight("small", [16, 8])
    path = _save(tmp_path / "if.onnx", nodes, {"x": [4, 16], "sr": []}, ["y"], weights,
                 types={"sr": TensorProto.INT64})
    feeds = {"x": np.zeros((4, 16), np.float32), "sr": np.array(8000, np.int64)}
    assert _compare(path, feeds, {"sr": feeds["sr"]}) == 4 * 16 * 8  # the else branch, folded
    profile = profile_graph(read_onnx(path, {"x": [4, 16]}))
    (entry,) = profile.control_flow()
    assert entry["mode"] == "both" and entry["branch"] == "then_branch"
    assert entry["branch_macs"] == {"then_branch": 4 * 16 * 32, "else_branch": 4 * 16 * 8}
    assert "input sr" in str(entry["reason"])
    assert profile.totals()["macs"] == 4 * 16 * 32
    (line,) = control_flow_lines(profile.control_flow())
    assert "both branches counted (then 2.05K, else 512 MACs), the larger (then)" in line and "sr=VALUE" in line


def test_loop_and_scan_bodies_count_once_per_trip(tmp_path: Path) -> None:
    def values(*specs: Tuple[str, int, List[int]]) -> List[onnx.ValueInfoProto]:
        return [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in specs]
    body_loop = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["h_mm"]), helper.make_node("Tanh", ["h_mm"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "loop_body",
        values(("i", TensorProto.INT64, []), ("cond_in", TensorProto.BOOL, []), ("h_in", F, [2, 8])),
        values(("cond_out", TensorProto.BOOL, []), ("h_out", F, [2, 8])))
    body_scan = helper.make_graph(
        [helper.make_node("MatMul", ["row", "w"], ["s_out"]),
         helper.make_node("Add", ["acc_in", "s_out"], ["acc_out"])], "scan_body",
        values(("acc_in", F, [8]), ("row", F, [8])), values(("acc_out", F, [8]), ("s_out", F, [8])))
    nodes = [helper.make_node("Loop", ["trips", "", "h0"], ["h_final"], name="loop", body=body_loop),
             helper.make_node("Scan", ["acc0", "rows"], ["acc_final", "scanned"], name="scan", body=body_scan,
                              num_scan_inputs=1)]
    weights = [_weight("w", [8, 8]), numpy_helper.from_array(np.array(5, np.int64), "trips")]
    path = _save(tmp_path / "loop.onnx", nodes, {"h0": [2, 8], "acc0": [8], "rows": [6, 8]},
                 ["h_final", "acc_final"], weights)
    feeds = {"h0": np.zeros((2, 8), np.float32), "acc0": np.zeros(8, np.float32),
             "rows": np.zeros((6, 8), np.float32)}
    assert _compare(path, feeds) == 5 * 2 * 8 * 8 + 6 * 8 * 8
    modes = {e["layer"]: (e["mode"], e["trips"]) for e in profile_graph(read_onnx(path)).control_flow()}
    assert modes == {"loop": ("repeated", 5), "scan": ("repeated", 6)}


def test_a_static_qoperator_model_keeps_its_shapes_through_the_contrib_qlinear_ops(tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    nodes = [helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "k2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"]),
             helper.make_node("Concat", ["s", "r1"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    weights = [_weight("k1", [8, 3, 3, 3]), _weight("b1", [8]), _weight("k2", [8, 8, 3, 3]), _weight("b2", [8]),
               _weight("wf", [10, 16]), _weight("bf", [10])]
    float_path = _save(tmp_path / "float.onnx", nodes, {"x": [1, 3, 16, 16]}, ["y"], weights, opset=13)

    class Samples(quantization.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.left = [{"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return self.left.pop() if self.left else None

    path = tmp_path / "int8.onnx"
    quantization.quantize_static(str(float_path), str(path), Samples(),
                                 quant_format=quantization.QuantFormat.QOperator)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool"} <= ops
    assert _compare(path, {"x": np.zeros((1, 3, 16, 16), np.float32)}) == 256 * 8 * 27 + 256 * 8 * 72 + 160


def test_a_model_onnx_runtime_optimized_keeps_its_shapes_through_fused_conv_and_gemm(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "k2", "b2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["s2"]),
             helper.make_node("Flatten", ["s2"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["y"])]
    weights = [_weight("k1", [8, 3, 3, 3]), _weight("b1", [8]), _weight("k2", [4, 8, 3, 3]), _weight("b2", [4]),
               _weight("wf", [10, 4 * 6 * 6]), _weight("bf", [10])]
    source = _save(tmp_path / "float.onnx", nodes, {"x": [1, 3, 16, 16]}, ["y"], weights, opset=13)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    path = tmp_path / "optimized.onnx"
    assert "FusedConv" in {node.op_type for node in onnx.load(str(path)).graph.node}
    assert _compare(path, {"x": np.zeros((1, 3, 16, 16), np.float32)}) == 64 * 8 * 27 + 36 * 4 * 72 + 10 * 144
