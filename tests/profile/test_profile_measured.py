"""Measured times joined onto a small hand-counted graph: shares, achieved rates, a fused group's
roofline, the ceiling that judges each layer (runtime/precision, memory level), a time below its bound
flagged, the per-layer sum against the whole-model latency, and the static and no-timer cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
from onnx import helper
from support.nets import write_onnx
from support.peaks import fake_peaks

from agent.profile.export import export_profile
from agent.profile.measured import group_bytes, profile_section
from agent.profile.render import why
from agent.profile.static import static_profile

PEAKS = fake_peaks(caches=False)  # DRAM's bandwidth only
CONV_FLOPS = 2 * 8 * 8 * 8 * 4 * 9  # out elements x C_in x k, 2 FLOPs per MAC, no bias
RELU_FLOPS = 8 * 8 * 8
GROUP_BYTES = 4 * (4 * 64) + 4 * (8 * 4 * 9) + 4 * (8 * 64)  # x and w in, y out; c never leaves the kernel


def conv_relu(tmp_path: Path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return static_profile(write_onnx(tmp_path / "m.onnx", nodes, {"x": ((1, 4, 8, 8), "float32")},
                                     {"w": ((8, 4, 3, 3), "float32")}, ["y"]))


def onnxruntime_trace(ms: float = 0.1) -> Dict[str, Any]:
    """What the worker returns for the graph above run as one fused Conv (`ms`), plus one node of a subgraph."""
    nodes = [{"name": "fused", "op": "Conv", "inputs": ["x"], "outputs": ["y"], "attributes": {}},
             {"name": "orphan", "op": "Abs", "inputs": ["q"], "outputs": ["r"], "attributes": {}}]
    return {"available": True, "runtime": "onnxruntime", "runs": 10, "warmup": 2, "run_p50_ms": 0.2,
            "profiler_cost_ms_per_node": 0.001, "call_overhead_ms": 0.005, "graph": {"nodes": nodes, "constants": []},
            "nodes": [{"name": "fused", "op": "Conv", "ms": ms}, {"name": "orphan", "op": "Abs", "ms": 0.02}]}


def test_a_fused_group_carries_the_time_and_the_roofline_of_both_layers(tmp_path: Path) -> None:
    profile = conv_relu(tmp_path)
    assert group_bytes(profile.graph, {0, 1}) == GROUP_BYTES
    section = profile_section(profile, onnxruntime_trace(), {"p50_ms": 0.125}, PEAKS, threads=4,
                              runtime="onnxruntime")
    conv, relu = section["layers"]
    assert (conv["measured_ms"], conv["share"], conv["runtime_nodes"], conv["fused_layers"]) == (
        0.1, 1.0, ["fused"], ["relu"])
    assert conv["achieved_gflops"] == pytest.approx((CONV_FLOPS + RELU_FLOPS) / 0.1e-3 / 1e9, rel=1e-3)
    assert conv["achieved_gbs"] == pytest.approx(GROUP_BYTES / 0.1e-3 / 1e9, rel=1e-3)
    memory_ms = GROUP_BYTES / 4e9 * 1e3  # above the compute time at 40 GFLOP/s
    assert conv["bound"] == "memory" and conv["lower_bound_ms"] == pytest.approx(memory_ms, rel=1e-4)
    assert conv["roof_fraction"] == pytest.approx(memory_ms / 0.1, rel=1e-3)
    assert (relu["measured_ms"], relu["fused_into"], relu["share"]) == (None, "conv", None)
    assert section["totals"]["measured_ms"] == 0.1
    assert section["fusion"]["runtime"] == {"count": 1, "groups": [
        {"head": "conv", "layers": ["conv", "relu"], "ops": ["Conv", "Relu"], "runtime_nodes": ["fused"]}]}


def test_the_sum_of_measured_nodes_is_compared_with_the_whole_model_latency(tmp_path: Path) -> None:
    section = profile_section(conv_relu(tmp_path), onnxruntime_trace(), {"p50_ms": 0.125}, PEAKS, threads=4,
                              runtime="onnxruntime")
    measured = section["measured"]
    assert measured["available"] and measured["joined_by"] == "optimized graph"
    assert (measured["layers_sum_ms"], measured["nodes_sum_ms"]) == (0.1, pytest.approx(0.12))
    assert measured["sum_to_whole_ratio"] == pytest.approx(0.96)
    assert (measured["accounted_ms"], measured["accounted_to_whole_ratio"]) == (pytest.approx(0.125), 1.0)
    assert measured["not_joined"] == [{"node": "orphan", "op": "Abs", "ms": 0.02}]
    whole = measured["whole_model"]
    assert whole["achieved_gflops"] == pytest.approx((CONV_FLOPS + RELU_FLOPS) / 0.125e-3 / 1e9, rel=1e-3)
    roof = section["roofline"]
    assert (roof["gflops"], roof["gbs"], roof["ridge_intensity"], roof["ceiling"]) == (40.0, 4.0, 10.0, "all cores")


def test_one_thread_is_held_to_the_one_core_ceilings(tmp_path: Path) -> None:
    section = profile_section(conv_relu(tmp_path), onnxruntime_trace(), {"p50_ms": 0.125}, PEAKS, threads=1,
                              runtime="onnxruntime")
    assert (section["roofline"]["gflops"], section["roofline"]["ceiling"]) == (10.0, "one core")
    compute_ms = (CONV_FLOPS + RELU_FLOPS) / 10e9 * 1e3
    assert section["layers"][0]["lower_bound_ms"] == pytest.approx(max(compute_ms, GROUP_BYTES / 2e9 * 1e3), rel=1e-4)


def test_static_and_no_timer_sections_keep_every_layer_unmeasured(tmp_path: Path) -> None:
    static = profile_section(conv_relu(tmp_path), None, None, None, threads=2)
    assert static["measured"]["available"] is False and "static" in static["measured"]["reason"]
    assert static["roofline"] is None and all(r["measured_ms"] is None and r["bound"] is None
                                              for r in static["layers"])
    tflite = {"available": False, "runtime": "tflite", "reason": "the TFLite Python API has no per-op timer"}
    section = profile_section(conv_relu(tmp_path), tflite, {"p50_ms": 0.5}, PEAKS, threads=1, runtime="tflite")
    assert section["measured"]["reason"] == tflite["reason"]
    assert section["measured"]["whole_model"]["p50_ms"] == 0.5
    assert section["measured"]["whole_model"]["roof_fraction"] > 0
    assert export_profile(section) is None and export_profile(static) is None  # no per-layer times to export
    # each layer alone against tflite's one-core ridge of 6 FLOPs/byte: the conv does 8.7, the relu 0.125
    assert [r["bound"] for r in section["layers"]] == ["compute", "memory"]


def test_each_layer_names_the_ceiling_that_judged_it(tmp_path: Path) -> None:
    section = profile_section(conv_relu(tmp_path), onnxruntime_trace(), {"p50_ms": 0.125}, fake_peaks(), threads=4,
                              runtime="onnxruntime")
    conv, relu = section["layers"]
    assert (conv["bound"], conv["ceiling"]) == ("compute", "onnxruntime/fp32 compute")  # 4 KiB fit L1: 100 GB/s
    assert (relu["bound"], relu["ceiling"]) == ("memory", "L1 bandwidth")  # alone: 4 KiB moved, 512 FLOPs
    roof = section["roofline"]
    assert roof["compute"] == {"onnxruntime/fp32": 40.0} and [m["name"] for m in roof["memory"]] == ["L1", "L2", "DRAM"]
    assert roof["memory"][0]["capacity_bytes"] == 4 * (32 << 10) and roof["by_ceiling"] == {
        "onnxruntime/fp32 compute": 1}


def test_int8_layers_are_judged_by_the_int8_roof(tmp_path: Path) -> None:
    nodes = [helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"], ["y"], name="qconv",
                              pads=[1, 1, 1, 1])]
    constants = {"sx": ((), "float32"), "zx": ((), "uint8"), "w": ((64, 64, 3, 3), "int8"), "sw": ((), "float32"),
                 "zw": ((), "int8"), "sy": ((), "float32"), "zy": ((), "uint8")}
    profile = static_profile(write_onnx(tmp_path / "q.onnx", nodes, {"x": ((1, 64, 8, 8), "uint8")}, constants, ["y"]))
    row = profile_section(profile, None, None, PEAKS, threads=4, runtime="onnxruntime")["layers"][0]
    assert (row["dtype"], row["bound"], row["ceiling"]) == ("uint8", "compute", "onnxruntime/int8 compute")
    assert row["lower_bound_ms"] == pytest.approx(row["flops"] / 80e9 * 1e3, rel=1e-4)


def test_a_time_below_the_bound_is_flagged_not_printed_bare(tmp_path: Path) -> None:
    memory_ms = GROUP_BYTES / 4e9 * 1e3  # the fused conv's bound on DRAM's 4 GB/s
    section = profile_section(conv_relu(tmp_path), onnxruntime_trace(memory_ms / 2), {"p50_ms": memory_ms / 4},
                              PEAKS, threads=4, runtime="onnxruntime")
    conv = section["layers"][0]
    assert conv["roof_fraction"] == pytest.approx(2.0, rel=1e-3) and conv["peak_under_measured"] is True
    assert "200.0% of roof (peak under-measured)" in why(conv)
    whole = section["measured"]["whole_model"]
    assert whole["roof_fraction"] > 1 and whole["peak_under_measured"] is True
    slow = profile_section(conv_relu(tmp_path), onnxruntime_trace(), {"p50_ms": 0.125}, PEAKS, threads=4,
                           runtime="onnxruntime")
    assert not slow["layers"][0]["peak_under_measured"] and not slow["measured"]["whole_model"]["peak_under_measured"]
    assert "under-measured" not in why(slow["layers"][0])
