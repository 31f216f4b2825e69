"""The ONNX reader: shapes, weights in Constant nodes, subgraphs, external data, QDQ, bad files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from support.truncation import check_truncated_profile

from agent.errors import InputSpecError, ModelFormatError, ModelNotFoundError
from agent.graph.read import read_graph
from agent.profile.static import static_profile

Dims = Sequence[Union[int, str]]


def conv_model(path: Path, input_dims: Dims, extra_nodes: Optional[List] = None,
               weight_in_constant_node: bool = False, **conv_attributes: object) -> Path:
    """x -> Conv(8 -> 16, 3x3) -> y, the weight as an initializer or a Constant node."""
    weight = numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **conv_attributes)]
    initializers = [weight]
    if weight_in_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=weight))
        initializers = []
    graph = helper.make_graph(nodes + (extra_nodes or []), "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_symbolic_batch_becomes_one_and_is_reported(tmp_path: Path) -> None:
    profile = static_profile(conv_model(tmp_path / "m.onnx", ["N", 8, 16, 16], pads=[1, 1, 1, 1]))
    assert profile.layers[0].macs == 16 * 16 * 16 * 8 * 9
    assert any("batch" in w and "'N'" in w for w in profile.graph.warnings)


def test_user_shapes_set_symbolic_dims(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", ["N", 8, "height", "width"], pads=[1, 1, 1, 1])
    profile = static_profile(path, shapes={"x": [2, 8, 64, 32]})
    assert profile.layers[0].macs == 2 * 16 * 64 * 32 * 8 * 9
    assert profile.to_dict()["model"]["inputs"] == {"x": [2, 8, 64, 32]}


def test_shapes_for_an_unknown_input_or_of_the_wrong_rank_are_input_errors(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", [1, 8, 16, 16])
    with pytest.raises(InputSpecError, match="images.*inputs are x"):
        read_graph(path, shapes={"images": [1, 8, 16, 16]})
    with pytest.raises(InputSpecError, match="rank 4"):
        read_graph(path, shapes={"x": [1, 8, 16]})


def test_an_unresolved_dim_is_reported_and_the_layer_not_counted(tmp_path: Path) -> None:
    profile = static_profile(conv_model(tmp_path / "m.onnx", [1, 8, "height", 16]))
    assert any("'height'" in w for w in profile.graph.warnings)
    assert profile.layers[0].macs is None and profile.layers[0].note
    assert profile.not_counted()[0]["layer"] == "conv"
    assert profile.totals()["macs"] == 0 and profile.totals()["params"] == 16 * 8 * 9


def test_weights_in_constant_nodes_are_parameters(tmp_path: Path) -> None:
    profile = static_profile(conv_model(tmp_path / "m.onnx", [1, 8, 4, 4], weight_in_constant_node=True))
    assert [c.op for c in profile.layers] == ["Conv"]
    assert profile.layers[0].params == 16 * 8 * 9
    assert profile.totals()["params"] == 16 * 8 * 9


def test_same_auto_padding_is_resolved_to_explicit_pads(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", [1, 8, 7, 7], auto_pad="SAME_UPPER", strides=[2, 2])
    conv = read_graph(path).layers[0]
    # out 4x4: total pad (4-1)*2 + 3 - 7 = 2 per axis, split evenly
    assert conv.attributes["pads"] == [1, 1, 1, 1]
    assert conv.attributes["kernel"] == [3, 3] and conv.attributes["strides"] == [2, 2]
    assert (conv.attributes["in_channels"], conv.attributes["out_channels"]) == (8, 16)


def test_an_if_with_a_constant_condition_is_replaced_by_the_branch_it_takes(tmp_path: Path) -> None:
    def branch(name: str) -> onnx.GraphProto:
        node = helper.make_node("Relu", ["y"], [name + "_out"])
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(name + "_out",
                                                                                  TensorProto.FLOAT, None)])
    flag = numpy_helper.from_array(np.array(True), "flag")
    branch_node = helper.make_node("If", ["flag"], ["z"], name="choose", then_branch=branch("then"),
                                   else_branch=branch("else"))
    path = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4], extra_nodes=[branch_node])
    model = onnx.load(str(path))
    model.graph.initializer.append(flag)
    onnx.save(model, str(path))
    profile = static_profile(path)
    choose = next(layer for layer in profile.graph.layers if layer.name == "choose")
    assert choose.kind == "control_flow" and choose.attributes["subgraphs"] == ["else_branch", "then_branch"]
    assert profile.not_counted() == []
    (entry,) = profile.control_flow()
    assert (entry["layer"], entry["mode"], entry["branch"]) == ("choose", "taken", "then_branch")
    relu = next(c for c in profile.layers if c.name == "choose/then_branch/Relu_0")
    assert relu.flops == 16 * 2 * 2 and profile.graph.tensor("z").shape == (1, 16, 2, 2)
    assert profile.layers[0].macs == 16 * 2 * 2 * 8 * 9  # the rest is still counted


def test_external_data_is_reported_and_its_sizes_still_counted(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4])
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()  # sizes live in the graph; the values are never needed
    profile = static_profile(path)
    assert any("external data" in w for w in profile.graph.warnings)
    assert profile.layers[0].params == 16 * 8 * 9 and profile.layers[0].macs == 16 * 2 * 2 * 8 * 9


def test_unknown_ops_are_listed_never_zero(tmp_path: Path) -> None:
    odd = helper.make_node("Frobnicate", ["y"], ["z"], name="odd", domain="com.example")
    path = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4], extra_nodes=[odd])
    model = onnx.load(str(path))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, str(path))
    profile = static_profile(path)
    assert profile.unknown_ops() == [{"op": "Frobnicate", "count": 1, "layers": ["odd"]}]
    odd_cost = profile.layers[1]
    assert odd_cost.macs is None and odd_cost.flops is None and odd_cost.bytes_read == 16 * 2 * 2 * 4
    assert profile.totals()["unknown_ops"] == 1


def test_missing_truncated_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        read_graph(tmp_path / "absent.onnx")
    whole = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4]).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelFormatError, match="truncated.onnx"):
        read_graph(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is a text file, not a model\n" * 10)
    with pytest.raises(ModelFormatError, match="garbage.onnx"):
        read_graph(garbage)
    unsuffixed = tmp_path / "weights.bin"
    unsuffixed.write_bytes(whole)
    with pytest.raises(ModelFormatError, match="neither"):
        read_graph(unsuffixed)


def test_a_qdq_model_counts_int8_layers_not_float_plus_qdq(tmp_path: Path) -> None:
    """A real ONNX Runtime static QDQ quantization of Conv+ReLU+Conv: the convs become int8 work."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (16, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "float", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "float.onnx"))

    class Samples(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}] * 4)

        def get_next(self) -> Optional[dict]:
            return next(self.samples, None)

    quantization.quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "qdq.onnx"), Samples(),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
    floating = {c.name: c for c in static_profile(tmp_path / "float.onnx").layers}
    quantized = {c.name: c for c in static_profile(tmp_path / "qdq.onnx").layers}
    for name in ("conv1", "conv2"):
        assert quantized[name].macs == floating[name].macs
        assert quantized[name].dtype == "int8"
    # conv2: int8 input and weights in, int8 output: a quarter of the float bytes
    assert quantized["conv2"].bytes_read == 8 * 16 * 16 + 16 * 8 * 9
    assert quantized["conv2"].bytes_written == 16 * 16 * 16
    assert quantized["conv1"].param_bytes == 8 * 3 * 9 + 4 * 8  # int8 weights, int32 bias
    kinds = [c.kind for c in quantized.values()]
    assert kinds.count("quantize") == 1 and kinds.count("dequantize") == 1  # graph input and output only
    graph_read = read_graph(tmp_path / "qdq.onnx")
    quantized_input = graph_read.tensors[graph_read.layers[1].inputs[0]]
    assert quantized_input.dtype == "int8" and quantized_input.quant is not None


def test_a_malformed_node_is_reported_not_crashed(tmp_path: Path) -> None:
    pool = helper.make_node("MaxPool", ["y"], ["z"], name="pool")  # kernel_shape is required
    profile = static_profile(conv_model(tmp_path / "m.onnx", [1, 8, 4, 4], extra_nodes=[pool]))
    assert any("pool" in w and "kernel_shape" in w for w in profile.graph.warnings)
    assert profile.layers[1].macs is None and profile.not_counted()[0]["layer"] == "pool"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_truncation_gives_a_profile_or_a_format_error(tmp_path: Path, cut: int) -> None:
    """Protobuf parses many prefixes of a model: whatever survives is profiled, never a traceback."""
    whole = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4], extra_nodes=[
        helper.make_node("Relu", ["y"], ["r"], name="relu")]).read_bytes()
    check_truncated_profile(whole, cut, tmp_path / "part.onnx")


def test_user_shapes_fill_an_input_stored_without_rank(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4])
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.ClearField("shape")
    onnx.save(model, str(path))
    assert static_profile(path).layers[0].macs is None  # rank unknown: nothing to count from
    assert static_profile(path, shapes={"x": [1, 8, 4, 4]}).layers[0].macs == 16 * 2 * 2 * 8 * 9


def test_a_stale_stored_shape_never_overrides_the_inferred_one(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", [1, 8, 4, 4])
    model = onnx.load(str(path))
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 99, 2, 2]))
    onnx.save(model, str(path))
    assert static_profile(path).layers[0].macs == 16 * 2 * 2 * 8 * 9


def test_a_graph_the_fold_cannot_handle_is_profiled_from_one_round_of_inference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.graph.onnx_fold as fold

    def broken(*args: object) -> bool:
        raise ValueError("an If the fold does not handle")

    monkeypatch.setattr(fold, "inline_known", broken)
    profile = static_profile(conv_model(tmp_path / "m.onnx", [1, 8, 4, 4]))
    assert profile.layers[0].macs == 16 * 2 * 2 * 8 * 9
    assert any("folding shapes and control flow failed" in w and "an If" in w for w in profile.graph.warnings)


def test_a_dim_name_a_given_shape_fixes_resolves_in_every_input_that_names_it(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("MatMul", ["state", "w"], ["z"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8])]
    graph = helper.make_graph(nodes, "named", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((8, 4), np.float32), "w")])
    path = tmp_path / "named.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    profile = static_profile(path, shapes={"x": [3, 5, 8]})
    assert [c.macs for c in profile.layers] == [3 * 5 * 4 * 8, 2 * 3 * 4 * 8]
    assert not any("state" in w for w in profile.graph.warnings)
