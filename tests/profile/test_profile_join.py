"""Joining the runtime's optimized graph back onto the model's layers: hand-built rewrites, then real
ONNX Runtime traces of the bundled models."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
from onnx import helper
from support.nets import write_onnx

from agent.backends.registry import get_backend
from agent.graph.model import Graph
from agent.graph.read import read_graph
from agent.measure.messages import TraceSettings
from agent.measure.trace import trace_runs
from agent.profile.join import RuntimeNode, join_by_name, join_runtime

F32 = "float32"


def node(name: str, op: str, inputs: List[str], outputs: List[str],
         attributes: Optional[Dict[str, List[int]]] = None) -> RuntimeNode:
    return RuntimeNode(name, op, inputs, outputs, attributes or {})


def graph_of(tmp_path: Path, nodes: List, inputs: Dict, constants: Dict, outputs: List[str]) -> Graph:
    return read_graph(write_onnx(tmp_path / "model.onnx", nodes, inputs, constants, outputs))


def test_an_nchwc_chain_with_renamed_tensors_aligns_heads_and_fuses_activations(tmp_path: Path) -> None:
    """Conv-Relu-Conv-Relu run as ReorderInput, two fused NCHWc Convs, ReorderOutput: only `y` keeps its name."""
    graph = graph_of(tmp_path, [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2")],
        {"x": ((1, 3, 8, 8), F32)}, {"w1": ((8, 3, 3, 3), F32), "w2": ((8, 8, 1, 1), F32)}, ["y"])
    runtime = [node("reorder_in", "ReorderInput", ["x"], ["t0"]),
               node("r1_nchwc", "Conv", ["t0"], ["t1"], {"kernel_shape": [3, 3]}),
               node("y_nchwc", "Conv", ["t1"], ["t2"], {"kernel_shape": [1, 1]}),
               node("reorder_out", "ReorderOutput", ["t2"], ["y"])]
    join = join_runtime(graph, runtime, set())
    assert join.nodes_of == {0: ["reorder_in", "r1_nchwc"], 2: ["y_nchwc", "reorder_out"]}
    assert join.fused_into == {1: 0, 3: 2}
    assert (join.folded, join.removed, join.not_joined) == ([], [], [])


def test_kernel_geometry_beats_execution_order(tmp_path: Path) -> None:
    """Two branch convs the runtime runs in the other order are told apart by their kernels."""
    graph = graph_of(tmp_path, [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="one_by_one"),
        helper.make_node("Conv", ["x", "w3"], ["b"], name="three_by_three", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        {"x": ((1, 4, 8, 8), F32)}, {"w1": ((4, 4, 1, 1), F32), "w3": ((4, 4, 3, 3), F32)}, ["y"])
    runtime = [node("n3", "Conv", ["x"], ["t3"], {"kernel_shape": [3, 3], "group": [1]}),
               node("n1", "Conv", ["x"], ["t1"], {"kernel_shape": [1, 1], "group": [1]}),
               node("sum", "Add", ["t1", "t3"], ["y"])]
    join = join_runtime(graph, runtime, set())
    assert join.nodes_of == {1: ["n3"], 0: ["n1"], 2: ["sum"]}
    assert join.fused_into == {}


def test_matmul_and_add_become_one_gemm(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
                                helper.make_node("Add", ["m", "b"], ["y"], name="bias")],
                     {"x": ((1, 16), F32)}, {"w": ((16, 4), F32), "b": ((4,), F32)}, ["y"])
    join = join_runtime(graph, [node("fused", "Gemm", ["x"], ["y"])], set())
    assert join.nodes_of == {0: ["fused"]} and join.fused_into == {1: 0}


def test_layers_computed_from_constants_are_folded(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, [helper.make_node("Add", ["c1", "c2"], ["k"], name="constant_sum"),
                                helper.make_node("Mul", ["x", "k"], ["y"], name="scale")],
                     {"x": ((1, 4), F32)}, {"c1": ((1, 4), F32), "c2": ((1, 4), F32)}, ["y"])
    join = join_runtime(graph, [node("scale", "Mul", ["x"], ["y"])], {"k"})
    assert join.folded == [0] and join.nodes_of == {1: ["scale"]} and join.fused_into == {}


def test_unmatched_runtime_nodes_and_removed_layers_are_named(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu"),
                                helper.make_node("Sigmoid", ["x"], ["unused"], name="dead_branch")],
                     {"x": ((1, 4), F32)}, {}, ["y"])
    runtime = [node("relu", "Relu", ["x"], ["y"]), node("then_branch/op", "Abs", ["inner_a"], ["inner_b"])]
    join = join_runtime(graph, runtime, set())
    assert join.nodes_of == {0: ["relu"]}
    assert join.removed == [1] and join.not_joined == ["then_branch/op"]


def test_without_the_runtime_graph_nodes_join_by_name(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": ((1, 4), F32)}, {}, ["y"])
    join = join_by_name(graph, ["relu", "Memcpy"])
    assert join.nodes_of == {0: ["relu"]} and join.not_joined == ["Memcpy"]


def traced(path: Path, runs: int = 5) -> Dict:
    """A real ONNX Runtime trace of `path`, run in this process with one thread."""
    backend = get_backend("onnxruntime")
    options = backend.validate_options({})
    session = backend.load(path, 1, options)
    shape = tuple(d if isinstance(d, int) else 1 for d in session.inputs[0].shape)
    feeds = [np.random.default_rng(0).random(shape, dtype=np.float32)]
    return trace_runs(backend, path, 1, options, [shape], feeds, TraceSettings(runs, 2))


def joined(path: Path, trace: Dict):
    graph = read_graph(path)
    runtime = [RuntimeNode.from_dict(n) for n in trace["graph"]["nodes"]]
    return graph, join_runtime(graph, runtime, set(trace["graph"]["constants"]))


def test_digits_every_runtime_node_joins_and_each_conv_carries_its_relu(digits: Path) -> None:
    path = digits / "model.fp32.onnx"
    trace = traced(path)
    graph, join = joined(path, trace)
    assert join.not_joined == [] and join.removed == []
    assert sorted(name for names in join.nodes_of.values() for name in names) == \
        sorted(n["name"] for n in trace["graph"]["nodes"])
    fused = sorted((graph.layers[head].op, graph.layers[i].op) for i, head in join.fused_into.items())
    assert fused == [("Conv", "Relu")] * 3 + [("MatMul", "Add")]


@pytest.mark.parametrize("model", ["digits", "mobilenet_v2"])
def test_heads_agree_with_the_layer_names_onnxruntime_keeps(model: str, digits: Path) -> None:
    """ORT names an NCHWc node after the layer (`<layer>_nchwc`) or after the activation output it absorbed:
    wherever a runtime node's name says which layer it is, the join must have chosen that layer."""
    path = digits.parent / model / "model.fp32.onnx"
    graph, join = joined(path, traced(path, runs=2))
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    written_by = graph.producers()
    checked = 0
    for head, names in join.nodes_of.items():
        for name in names:
            base = name[:-len("_nchwc")] if name.endswith("_nchwc") else name
            expected = index.get(base)
            if expected is None and base in written_by:
                expected = join.fused_into.get(written_by[base], written_by[base])
            if expected is not None:
                assert expected == head, (name, graph.layers[head].name)
                checked += 1
    assert checked >= len(join.nodes_of) - 2  # nearly every node names its layer
