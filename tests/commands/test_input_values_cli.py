"""`--input NAME=VALUE` and failures on stderr: a model whose int64 input `sr` chooses an If branch,
the else branch failing in ONNX Runtime (a Reshape that cannot hold the data), as silero-vad's did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from support.cli import run_cli  # noqa: E402

from agent.backends.base import TensorInfo  # noqa: E402
from agent.errors import UsageError  # noqa: E402
from agent.measure.inputs import given_array, input_value, parse_input_arg  # noqa: E402


def _steered(path: Path) -> Path:
    """y = x @ w when sr == 16000, else Reshape(x, [7]) which ONNX Runtime refuses at run time."""
    then_branch = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["good"], name="project")], "then", [],
                                    [helper.make_tensor_value_info("good", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Reshape", ["x", "seven"], ["bad"], name="squash")], "else",
                                    [], [helper.make_tensor_value_info("bad", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Equal", ["sr", "sixteen"], ["is16"], name="is16"),
             helper.make_node("If", ["is16"], ["y"], name="If_0", then_branch=then_branch, else_branch=else_branch)]
    constants = [numpy_helper.from_array(np.ones((3, 4), np.float32), "w"),
                 numpy_helper.from_array(np.array(16000, np.int64), "sixteen"),
                 numpy_helper.from_array(np.array([7], np.int64), "seven")]
    graph = helper.make_graph(nodes, "steered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                                 helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_number_is_a_value_and_anything_else_a_file() -> None:
    assert (input_value("16000"), input_value("0.5"), input_value("true")) == (16000, 0.5, 1)
    assert input_value("audio.npy") is None and parse_input_arg("sr=16000") == ("sr", "16000")
    with pytest.raises(UsageError, match="file not found"):
        parse_input_arg("sr=missing.npy")
    array = given_array(TensorInfo("sr", (), "int64"), "16000")
    assert array.shape == () and array.dtype == np.int64 and int(array) == 16000
    assert given_array(TensorInfo("k", ("n", 2), "float32"), "0.5").tolist() == [[0.5, 0.5]]


def test_profile_json_on_a_failing_model_exits_non_zero_with_one_line_naming_layer_and_op(tmp_path: Path) -> None:
    model = _steered(tmp_path / "steered.onnx")
    result = run_cli("profile", str(model), "--backend", "onnxruntime", "--iterations", "3", "--json")
    assert result.code != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("edge-agent: error:")]
    assert len(lines) == 1 and "layer squash (op Reshape) inside If If_0" in lines[0]
    (report,) = result.json()
    assert report["status"] == "failed" and "layer squash (op Reshape)" in report["error"]["message"]
    (entry,) = report["profile"]["control_flow"]
    assert entry["inputs"] == ["sr"] and entry["branch_macs"] == {"then_branch": 24, "else_branch": 0}
    assert any("input sr chooses the branch of If_0" in w and "generated" in w for w in report["profile"]["warnings"])


def test_a_given_value_folds_the_if_and_feeds_the_run(tmp_path: Path) -> None:
    model = _steered(tmp_path / "steered.onnx")
    result = run_cli("profile", str(model), "--backend", "onnxruntime", "--iterations", "3", "--json",
                     "--input", "sr=16000")
    assert result.code == 0, result.stderr
    (report,) = result.json()
    (entry,) = report["profile"]["control_flow"]
    assert (entry["mode"], entry["branch"]) == ("taken", "then_branch")
    assert report["profile"]["totals"]["macs"] == 2 * 4 * 3
    bench = run_cli("bench", str(model), "--backend", "onnxruntime", "--iterations", "3", "--json",
                    "--input", "sr=16000")
    assert bench.code == 0, bench.stderr
