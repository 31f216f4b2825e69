"""TensorRT's IProfiler layer times joined onto the model's layers by the engine layers' names.

The IProfiler output below is written in the forms TensorRT 8.5 and 10 name engine layers (fusions
with ` + `, PWN(...), {ForeignNode[first...last]}, reformatting copies, unnamed layers); it was not
recorded on a board here, so the join is unverified on hardware.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from agent.profile.join_tensorrt import engine_layer_nodes  # noqa: E402
from agent.profile.measured import profile_section  # noqa: E402
from agent.profile.static import static_profile  # noqa: E402

# What `TensorRTSession.layer_times` returns (LayerTimes.summary), in execution order.
RECORDED: List[Dict[str, Any]] = [
    {"name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv", "mean_ms": 0.010, "share": 0.05},
    {"name": "/conv1/Conv + /relu1/Relu", "mean_ms": 0.050, "share": 0.25},
    {"name": "/conv2/Conv + /add/Add + /relu2/Relu", "mean_ms": 0.060, "share": 0.30},
    {"name": "PWN(PWN(/act/Sigmoid), /act/Mul)", "mean_ms": 0.020, "share": 0.10},
    {"name": "{ForeignNode[/head/Flatten.../head/MatMul]}", "mean_ms": 0.040, "share": 0.20},
    {"name": "(Unnamed Layer* 12) [Shuffle]", "mean_ms": 0.020, "share": 0.10},
]


def _model(path: Path) -> Path:
    def conv(name: str, source: str, target: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [source, f"{name}.w"], [target], name=f"/{name}/Conv", pads=[1, 1, 1, 1])
    nodes = [conv("conv1", "x", "c1"), helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
             conv("conv2", "r1", "c2"), helper.make_node("Add", ["c2", "r1"], ["s"], name="/add/Add"),
             helper.make_node("Relu", ["s"], ["r2"], name="/relu2/Relu"),
             helper.make_node("Sigmoid", ["r2"], ["g"], name="/act/Sigmoid"),
             helper.make_node("Mul", ["r2", "g"], ["a"], name="/act/Mul"),
             helper.make_node("Flatten", ["a"], ["f"], name="/head/Flatten"),
             helper.make_node("MatMul", ["f", "fc.w"], ["y"], name="/head/MatMul")]
    weights = [numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "conv1.w"),
               numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "conv2.w"),
               numpy_helper.from_array(np.ones((64, 10), np.float32), "fc.w")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_engine_layer_names_cover_the_onnx_nodes_they_fuse() -> None:
    order = {name: i for i, name in enumerate(["a", "b", "c", "d"])}
    assert engine_layer_nodes("a + PWN(b, PWN(c))", order) == ["a", "b", "c"]
    assert engine_layer_nodes("{ForeignNode[b...d]}", order) == ["b", "c", "d"]
    assert engine_layer_nodes("Reformatting CopyNode for Output Tensor 0 to c", order) == ["c"]
    assert engine_layer_nodes("(Unnamed Layer* 3) [Shuffle]", order) == []


def test_iprofiler_times_go_to_each_engine_layers_head_and_the_rest_is_fused(tmp_path: Path) -> None:
    profile = static_profile(_model(tmp_path / "block.onnx"))
    trace = {"available": True, "runtime": "tensorrt", "runs": 10, "warmup": 0, "graph": None,
             "verified_on_hardware": False,
             "nodes": [{"name": r["name"], "op": None, "ms": r["mean_ms"], "raw_ms": r["mean_ms"]} for r in RECORDED]}
    section = profile_section(profile, trace, {"p50_ms": 0.25}, None, 1, runtime="tensorrt")
    rows = {row["name"]: row for row in section["layers"]}
    assert rows["/conv1/Conv"]["measured_ms"] == pytest.approx(0.060)  # its reformat copy and itself
    assert rows["/relu1/Relu"]["fused_into"] == "/conv1/Conv"
    assert rows["/conv2/Conv"]["measured_ms"] == pytest.approx(0.060)
    assert rows["/add/Add"]["fused_into"] == rows["/relu2/Relu"]["fused_into"] == "/conv2/Conv"
    assert rows["/act/Sigmoid"]["measured_ms"] == pytest.approx(0.020)
    assert rows["/act/Mul"]["fused_into"] == "/act/Sigmoid"
    assert rows["/head/Flatten"]["measured_ms"] == pytest.approx(0.040)
    assert rows["/head/MatMul"]["fused_into"] == "/head/Flatten"
    measured = section["measured"]
    assert measured["joined_by"] == "engine layer names" and measured["verified_on_hardware"] is False
    assert [n["node"] for n in measured["not_joined"]] == ["(Unnamed Layer* 12) [Shuffle]"]
    assert measured["nodes_sum_ms"] == pytest.approx(0.2)


def test_the_worker_trace_of_a_tensorrt_session_is_its_layer_times(tmp_path: Path) -> None:
    from agent.measure.messages import TraceSettings
    from agent.measure.trace import trace_runs

    calls: List[str] = []

    class Session:  # the parts of TensorRTSession that trace_runs uses
        def resize(self, shapes: Any) -> None:
            calls.append("resize")

        def bind(self, feeds: Any) -> Any:
            calls.append("bind")
            return lambda: None

        def layer_times(self, runs: int) -> List[Dict[str, Any]]:
            calls.append(f"layer_times({runs})")
            return RECORDED

        def close(self) -> None:
            calls.append("close")

    class Backend:
        name = "tensorrt"

        def load(self, path: Path, threads: int, options: Dict[str, Any]) -> Session:
            return Session()

    trace = trace_runs(Backend(), tmp_path / "m.onnx", 1, {}, [(1, 4, 4, 4)], [np.zeros((1, 4, 4, 4), np.float32)],
                       TraceSettings(runs=7, warmup=2))
    assert calls == ["resize", "bind", "layer_times(7)", "close"]
    assert trace["available"] and trace["runtime"] == "tensorrt" and trace["verified_on_hardware"] is False
    assert [n["name"] for n in trace["nodes"]] == [r["name"] for r in RECORDED]
