"""Peak activation memory, static parallelism and fusion opportunities on small hand-checked graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest
from onnx import helper
from support.nets import Spec, write_onnx

from agent.profile.costs import ELEMENTWISE
from agent.profile.static import Profile, static_profile

F32 = "float32"
VECTOR = ((1, 1000), F32)  # 4,000 bytes


def profile_of(tmp_path: Path, nodes: List, inputs: Dict[str, Spec], constants: Dict[str, Spec],
               outputs: List[str]) -> Profile:
    return static_profile(write_onnx(tmp_path / "model.onnx", nodes, inputs, constants, outputs))


def test_peak_activation_follows_liveness(tmp_path: Path) -> None:
    """x -> a=Relu(x) -> b=Relu(a) -> y=Add(a, b): a is still live when Add writes y."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    memory = profile_of(tmp_path, nodes, {"x": VECTOR}, {}, ["y"]).memory
    assert (memory.peak_bytes, memory.at_layer, memory.live_tensors) == (12_000, "add", ["a", "b", "y"])


def test_weights_are_not_activations(tmp_path: Path) -> None:
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    profile = profile_of(tmp_path, [node], {"x": VECTOR}, {"w": ((1000, 10), F32)}, ["y"])
    assert profile.memory.peak_bytes == 4000 + 40
    assert profile.totals()["param_bytes"] == 40_000


def test_parallel_branches_give_width_and_critical_path(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["b"], name="sigmoid"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    parallelism = profile_of(tmp_path, nodes, {"x": VECTOR}, {}, ["y"]).parallelism
    sigmoid = 1000 * ELEMENTWISE["sigmoid"][0]
    assert (parallelism.width, parallelism.depth) == (2, 2)
    assert sorted(parallelism.widest_level) == ["relu", "sigmoid"]
    assert parallelism.critical_path == ["sigmoid", "add"]
    assert parallelism.critical_path_flops == sigmoid + 1000
    assert parallelism.total_flops == sigmoid + 2000
    assert parallelism.average_parallelism == pytest.approx((sigmoid + 2000) / (sigmoid + 1000))


def conv_bn_relu(tail_reads_conv: bool) -> list:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    if tail_reads_conv:
        nodes.append(helper.make_node("Add", ["c", "y"], ["z"], name="add"))
    return nodes


CONV_CONSTANTS = dict({"w": ((8, 4, 3, 3), F32)}, **{k: ((8,), F32) for k in "gbmv"})


def test_vertical_fusion_of_conv_bn_relu_saves_the_intermediate_tensors(tmp_path: Path) -> None:
    profile = profile_of(tmp_path, conv_bn_relu(False), {"x": ((1, 4, 8, 8), F32)}, CONV_CONSTANTS, ["y"])
    (fusion,) = profile.fusion.vertical
    assert (fusion.layers, fusion.tensors) == (["conv", "bn", "relu"], ["c", "n"])
    assert fusion.saved_bytes == 2 * 2 * (8 * 8 * 8 * 4)  # two tensors, each written once and read once
    assert profile.fusion.to_dict()["vertical"]["count"] == 1


def test_no_vertical_fusion_when_another_layer_reads_the_conv_output(tmp_path: Path) -> None:
    profile = profile_of(tmp_path, conv_bn_relu(True), {"x": ((1, 4, 8, 8), F32)}, CONV_CONSTANTS, ["z"])
    assert profile.fusion.vertical == []


def test_horizontal_fusion_of_projections_reading_one_tensor(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", w], [w + "_out"], name=w) for w in ("wq", "wk", "wv")]
    nodes.append(helper.make_node("MatMul", ["x", "other"], ["o"], name="other"))  # another shape
    constants = {w: ((1000, 64), F32) for w in ("wq", "wk", "wv")}
    constants["other"] = ((1000, 32), F32)
    profile = profile_of(tmp_path, nodes, {"x": VECTOR}, constants, ["wq_out", "wk_out", "wv_out", "o"])
    (fusion,) = profile.fusion.horizontal
    assert (fusion.layers, fusion.tensors, fusion.saved_bytes) == (["wq", "wk", "wv"], ["x"], 2 * 4000)


def test_outputs_nothing_reads_are_dead(tmp_path: Path) -> None:
    nodes = [helper.make_node("Split", ["x"], ["left", "right"], name="split", axis=1, num_outputs=2),
             helper.make_node("Relu", ["left"], ["y"], name="relu")]
    profile = profile_of(tmp_path, nodes, {"x": VECTOR}, {}, ["y"])
    (dead,) = profile.fusion.dead_outputs
    assert (dead.layers, dead.tensors, dead.saved_bytes) == (["split"], ["right"], 2000)
