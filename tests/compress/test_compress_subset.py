"""`edge-agent compress subset` on the real digits model: the logits of the kept classes, in the order asked,
the labels and the evaluation data cut to match, and what cannot be cut refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper
from support.cli import run_cli

from agent.bundle import open_model
from agent.profile.static import static_profile


def logits(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_three_classes_keep_their_logits_labels_and_samples(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "three"
    result = run_cli("compress", "subset", str(digits), "--classes", "3,7,1", "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert [c["index"] for c in document["classes"]] == [3, 7, 1] and document["classifier"] == "logits"
    bundle = open_model(out)  # the sha256 of every file checked
    assert bundle.labels == ["3", "7", "1"] and bundle.outputs[0].shape[-1] == 3
    assert document["totals"]["after"]["params"] == static_profile(out / "model.fp32.onnx").totals()["params"] \
        == 93_962 - 10 * 129 + 3 * 129
    x_all, y_all = open_model(digits).evaluation.load()
    x, y = bundle.evaluation.load()
    chosen = np.isin(y_all, [3, 7, 1])
    assert np.array_equal(x, x_all[chosen]) and np.array_equal(np.array([3, 7, 1])[y], y_all[chosen])
    assert document["samples"]["evaluation"] == len(y) == chosen.sum() > 100
    pixels = (x.astype(np.float32) * 0.0625).astype(np.float32)
    before, after = logits(digits / "model.fp32.onnx", pixels), logits(out / "model.fp32.onnx", pixels)
    np.testing.assert_allclose(after, before[:, [3, 7, 1]], rtol=1e-5, atol=1e-5)
    top1 = run_cli("eval", str(out), "--json").json()[0]["accuracy"]["top1"]
    assert top1 == (after.argmax(1) == y).mean() >= 0.98


def test_classes_by_label_unknown_ones_refused(digits: Path, tmp_path: Path) -> None:
    unknown = run_cli("compress", "subset", str(digits), "--classes", "3,cat", "-o", str(tmp_path / "x"))
    assert unknown.code == 2 and unknown.stderr.count("\n") == 1
    assert "'cat' is neither a label of the model nor a class index" in unknown.stderr
    outside = run_cli("compress", "subset", str(digits), "--classes", "10", "-o", str(tmp_path / "x"))
    assert outside.code == 2 and "class 10 is outside the model's 0..9" in outside.stderr
    assert not (tmp_path / "x").exists()


def test_a_model_without_a_classifier_to_cut_says_so(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    path = tmp_path / "relu.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    result = run_cli("compress", "subset", str(path), "--classes", "1,2")
    assert result.code == 10 and result.stderr.count("\n") == 1
    assert "does not come from a Gemm or MatMul" in result.stderr
