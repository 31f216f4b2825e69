"""The TFLite reader on files written with the schema's object API, and on the bundled twins."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.tflite_nets import TFLiteBuilder
from support.truncation import check_truncated_profile

from agent.errors import InputSpecError, ModelFormatError, ProfileError
from agent.graph.read import read_graph
from agent.profile.costs import CELL, ELEMENTWISE
from agent.profile.static import static_profile

pytest.importorskip("ai_edge_litert")


def conv_net(path: Path, old_style_codes: bool = False, custom_tail: bool = False) -> Path:
    """x[1,8,8,3] -> CONV_2D 3x3/2 SAME + RELU6 -> DEPTHWISE 3x3 x2 -> GELU (-> MyCustomOp)."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 8, 8, 3])
    conv = b.tensor("conv", [1, 4, 4, 16])
    b.op("CONV_2D", [x, b.tensor("w", [16, 3, 3, 3], constant=True), b.tensor("b", [16], constant=True)],
         [conv], b.options("Conv2DOptions", padding=0, strideH=2, strideW=2, dilationHFactor=1,
                           dilationWFactor=1, fusedActivationFunction=3), old_style_code=old_style_codes)
    depthwise = b.tensor("depthwise", [1, 4, 4, 32])
    b.op("DEPTHWISE_CONV_2D", [conv, b.tensor("dw", [1, 3, 3, 32], constant=True),
                              b.tensor("db", [32], constant=True)], [depthwise],
         b.options("DepthwiseConv2DOptions", padding=0, strideH=1, strideW=1, depthMultiplier=2,
                   dilationHFactor=1, dilationWFactor=1))
    gelu = b.tensor("gelu", [1, 4, 4, 32])
    b.op("GELU", [depthwise], [gelu], b.options("GeluOptions"))
    last = gelu
    if custom_tail:
        last = b.tensor("custom", [1, 4, 4, 32])
        b.op("MyCustomOp", [gelu], [last])
    path.write_bytes(b.build([x], [last]))
    return path


def test_conv_and_depthwise_attributes_and_costs(tmp_path: Path) -> None:
    graph = read_graph(conv_net(tmp_path / "m.tflite"))
    conv, depthwise, gelu = graph.layers
    assert conv.attributes["pads"] == [0, 0, 1, 1]  # SAME at stride 2: the extra row/column at the end
    assert (conv.attributes["kernel"], conv.attributes["strides"], conv.attributes["activation"]) == (
        [3, 3], [2, 2], "clip")
    assert (depthwise.attributes["group"], depthwise.attributes["out_channels"]) == (16, 32)
    assert depthwise.attributes["pads"] == [1, 1, 1, 1]
    costs = static_profile(tmp_path / "m.tflite").layers
    assert costs[0].macs == 4 * 4 * 16 * 27
    assert costs[0].flops == 2 * costs[0].macs + 256 + 2 * 256  # bias adds + fused ReLU6 (min, max)
    assert costs[1].macs == 4 * 4 * 32 * 9 and costs[1].flops == 2 * costs[1].macs + 512
    assert costs[2].flops == 512 * ELEMENTWISE["gelu"][0]
    assert gelu.op == "GELU"  # code 150 > 127: read from builtin_code


def test_built_files_are_real_tflite_models(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(conv_net(tmp_path / "m.tflite")))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, 8, 8, 3), np.float32))
    interpreter.invoke()
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 4, 4, 32]


def test_old_files_keep_the_op_code_in_the_deprecated_field(tmp_path: Path) -> None:
    graph = read_graph(conv_net(tmp_path / "m.tflite", old_style_codes=True))
    assert graph.layers[0].op == "CONV_2D" and graph.layers[0].kind == "conv"


def test_custom_ops_are_listed_by_their_name(tmp_path: Path) -> None:
    profile = static_profile(conv_net(tmp_path / "m.tflite", custom_tail=True))
    assert profile.unknown_ops() == [{"op": "MyCustomOp", "count": 1, "layers": ["mycustomop_3"]}]
    assert profile.layers[3].macs is None and profile.layers[3].bytes_written == 512 * 4


def test_int8_fully_connected_reads_quantization_and_int8_bytes(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 64], "int8", scale=0.05, zero_point=-3)
    y = b.tensor("y", [1, 10], "int8", scale=0.1, zero_point=2)
    weights = b.tensor("w", [10, 64], "int8", constant=True, scale=0.01)
    b.op("FULLY_CONNECTED", [x, weights, b.tensor("b", [10], "int32", constant=True)], [y],
         b.options("FullyConnectedOptions", fusedActivationFunction=1))
    path = tmp_path / "fc.tflite"
    path.write_bytes(b.build([x], [y]))
    graph = read_graph(path)
    assert graph.tensors["x"].quant is not None
    assert graph.tensors["x"].quant.scale == (pytest.approx(0.05),) and graph.tensors["x"].quant.zero_point == (-3,)
    cost = static_profile(path).layers[0]
    assert (cost.macs, cost.dtype) == (640, "int8")
    assert cost.flops == 2 * 640 + 10 + 10  # bias + fused ReLU
    assert (cost.bytes_read, cost.bytes_written, cost.param_bytes) == (64 + 640 + 40, 10, 640 + 40)


def test_unidirectional_sequence_lstm(tmp_path: Path) -> None:
    batch, steps, features, hidden = 2, 6, 10, 16
    b = TFLiteBuilder()
    x = b.tensor("x", [batch, steps, features])
    inputs = [x]
    inputs += [b.tensor(f"wi{i}", [hidden, features], constant=True) for i in range(4)]
    inputs += [b.tensor(f"wr{i}", [hidden, hidden], constant=True) for i in range(4)]
    inputs += [-1, -1, -1]  # no peepholes
    inputs += [b.tensor(f"bias{i}", [hidden], constant=True) for i in range(4)]
    inputs += [-1, -1, b.tensor("h", [batch, hidden]), b.tensor("c", [batch, hidden])]
    y = b.tensor("y", [batch, steps, hidden])
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, [y],
         b.options("UnidirectionalSequenceLSTMOptions", fusedActivationFunction=4, timeMajor=False))
    path = tmp_path / "lstm.tflite"
    path.write_bytes(b.build([x], [y]))
    cost = static_profile(path).layers[0]
    assert cost.macs == batch * steps * 4 * hidden * (features + hidden)
    cell_flops = batch * steps * hidden * CELL["lstm"][0]
    assert cost.flops == 2 * cost.macs + cell_flops + batch * steps * hidden  # + fused tanh on y
    assert cost.params == 4 * hidden * (features + hidden) + 4 * hidden


def test_transpose_conv_reads_its_data_from_input_two(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 8])
    y = b.tensor("y", [1, 8, 8, 4])
    b.op("TRANSPOSE_CONV", [b.tensor("size", [4], "int32", constant=True),
                            b.tensor("w", [4, 3, 3, 8], constant=True), x], [y],
         b.options("TransposeConvOptions", padding=0, strideH=2, strideW=2))
    path = tmp_path / "up.tflite"
    path.write_bytes(b.build([x], [y]))
    layer = read_graph(path).layers[0]
    assert layer.attributes["pads"] == [0, 0, 1, 1] and layer.attributes["out_channels"] == 4
    cost = static_profile(path).layers[0]
    assert cost.macs == 4 * 4 * 8 * 4 * 9  # every input element meets C_out x 3 x 3 weights
    assert cost.params == 4 * 9 * 8  # the output-shape operand is no parameter


def test_fp16_weights_are_counted_at_their_stored_dtype(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 32])
    half = b.tensor("w16", [8, 32], "float16", constant=True)
    full = b.tensor("w32", [8, 32])
    b.op("DEQUANTIZE", [half], [full])
    y = b.tensor("y", [1, 8])
    b.op("FULLY_CONNECTED", [x, full, -1], [y], b.options("FullyConnectedOptions"))
    path = tmp_path / "fp16.tflite"
    path.write_bytes(b.build([x], [y]))
    profile = static_profile(path)
    assert [c.op for c in profile.layers] == ["FULLY_CONNECTED"]
    assert profile.layers[0].param_bytes == 8 * 32 * 2 and profile.layers[0].macs == 8 * 32


def test_bad_files_raise_model_format_error_naming_the_file(tmp_path: Path) -> None:
    whole = conv_net(tmp_path / "m.tflite").read_bytes()
    for cut in (12, len(whole) // 3, len(whole) - 200):
        truncated = tmp_path / f"cut{cut}.tflite"
        truncated.write_bytes(whole[:cut])
        with pytest.raises(ModelFormatError, match=f"cut{cut}.tflite"):
            read_graph(truncated)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="TFL3"):
        read_graph(garbage)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_truncation_gives_a_format_error_or_a_profile(tmp_path: Path, cut: int) -> None:
    check_truncated_profile(conv_net(tmp_path / "m.tflite").read_bytes(), cut, tmp_path / "part.tflite")


def test_a_user_shape_must_match_the_stored_one(tmp_path: Path) -> None:
    path = conv_net(tmp_path / "m.tflite")
    assert read_graph(path, shapes={"x": [1, 8, 8, 3]}).inputs == ["x"]
    with pytest.raises(InputSpecError, match="stored as"):
        read_graph(path, shapes={"x": [1, 16, 16, 3]})


def test_without_ai_edge_litert_the_reader_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A None entry in sys.modules makes the import fail as on a board without the package."""
    path = conv_net(tmp_path / "m.tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    monkeypatch.setitem(sys.modules, "tflite", None)  # nor the tflite package, its fallback
    with pytest.raises(ProfileError, match="ai-edge-litert"):
        read_graph(path)


@pytest.mark.parametrize("bundle, macs", [("digits", None), ("mobilenet_v2", 300_774_272)])
def test_bundled_onnx_and_tflite_twins_give_the_same_work(bundle: str, macs: int) -> None:
    folder = Path(__file__).resolve().parents[2] / "models" / bundle
    if not (folder / "model.fp32.onnx").is_file():
        pytest.skip(f"bundle {bundle} not built (scripts/make_models.py)")
    onnx_totals = static_profile(folder / "model.fp32.onnx").totals()
    for name in ("model.fp32.tflite", "model.int8.tflite"):
        totals = static_profile(folder / name).totals()
        assert totals["macs"] == onnx_totals["macs"] and totals["flops"] == onnx_totals["flops"]
        assert totals["params"] == onnx_totals["params"]
    if macs is not None:
        assert onnx_totals["macs"] == macs
    int8 = static_profile(folder / "model.int8.tflite").totals()
    assert int8["param_bytes"] < onnx_totals["param_bytes"] / 3  # int8 weights, int32 biases
