"""`edge-agent profile` and `edge-agent peaks` end to end: a real process, real runtimes and traces.

The peaks cache is a temporary folder (`EDGE_AGENT_CACHE_DIR`) holding an entry for this device, so
profiles do not measure the board each time; `peaks` itself is run for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.cli import QUICK, run_cli
from support.peaks import fake_peaks

LAYER_KEYS = {"name", "op", "macs", "flops", "params", "bytes_read", "bytes_written", "intensity", "measured_ms",
              "share", "achieved_gflops", "achieved_gbs", "bound", "lower_bound_ms", "roof_fraction", "fused_into",
              "ceiling", "peak_under_measured", "group_flops", "group_bytes"}
TOTAL_KEYS = {"macs", "flops", "mults", "params", "bytes_read", "bytes_written", "peak_activation_bytes",
              "unknown_ops", "measured_ms"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A cache folder holding peaks for this device (made-up figures no run here beats: no re-check runs)."""
    from agent.device.detect import device_section

    folder = tmp_path_factory.mktemp("cache")
    fingerprint = device_section().fingerprint
    peaks = fake_peaks(fingerprint, scale=20.0)
    (folder / "peaks.json").write_text(json.dumps({fingerprint: peaks.to_dict()}))
    return {"EDGE_AGENT_CACHE_DIR": str(folder)}


def one_line_error(result, code: int, text: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: ") and text in lines[0], result.stderr


def onnx_file(path: Path, nodes: List, inputs: Dict[str, List], outputs: Dict[str, List],
              weights: Dict[str, np.ndarray], domains: Dict[str, int] = None) -> Path:
    """A float32 model ONNX Runtime can load (typed outputs); dims may be names."""
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(v, n) for n, v in weights.items()])
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_profile_digits_onnxruntime_joins_the_trace_onto_every_layer(digits: Path, cache: Dict[str, str],
                                                                     tmp_path: Path) -> None:
    output, exported = tmp_path / "profile.json", tmp_path / "layers.json"
    result = run_cli("profile", str(digits), "--backend", "onnxruntime", "--json", "--output", str(output),
                     "--export-profile", str(exported), *QUICK, env=cache)
    assert result.code == 0, result.stderr
    (report,) = result.json()
    assert json.loads(output.read_text()) == result.json()
    assert report["schema"] == "edge-agent/report/1" and report["kind"] == "profile"
    assert report["latency"]["p50_ms"] > 0
    profile = report["profile"]
    assert "trace" not in profile and set(profile["totals"]) >= TOTAL_KEYS
    for layer in profile["layers"]:
        assert set(layer) >= LAYER_KEYS
    measured = profile["measured"]
    assert measured["available"] and measured["not_joined"] == [] and measured["runtime_nodes"] == 9
    timed = [layer["measured_ms"] for layer in profile["layers"] if layer["measured_ms"] is not None]
    assert sum(timed) == pytest.approx(measured["layers_sum_ms"]) == pytest.approx(profile["totals"]["measured_ms"])
    assert measured["whole_model_p50_ms"] == report["latency"]["p50_ms"]
    assert 0.2 < measured["sum_to_whole_ratio"] < 5  # the 10% target is checked by scripts/bench_profile.py
    heads = [layer for layer in profile["layers"] if layer["op"] == "Conv"]
    fused = {layer["op"]: layer["fused_into"] for layer in profile["layers"] if layer["fused_into"]}
    assert set(fused) == {"Relu", "Add"}
    assert profile["fusion"]["runtime"]["count"] == 4
    assert profile["roofline"]["compute"] == {"onnxruntime/fp32": 800.0}  # the cached entry, not a new measurement
    assert profile["roofline"]["rechecked"] == [] and not any(layer["peak_under_measured"] for layer in heads)
    assert all(layer["bound"] in ("compute", "memory") and layer["lower_bound_ms"] > 0 for layer in heads)
    # A roof fraction needs a measured time: on a loaded machine the calibrated profiler overhead can leave
    # a tiny layer at 0 ms, and then it has none (as the table shows the lower bound instead).
    assert all((layer["roof_fraction"] or 0) > 0 or layer["measured_ms"] == 0 for layer in heads)
    assert any((layer["roof_fraction"] or 0) > 0 for layer in heads)
    # trtexec's --exportProfile shape: the run count, then one entry per timed layer, plus the roofline's fields
    first, *entries = json.loads(exported.read_text())
    assert first == {"count": measured["runs"]} and len(entries) == len(timed)
    by_name = {layer["name"]: layer for layer in profile["layers"]}
    for entry in entries:
        layer = by_name[entry["name"]]
        assert entry["averageMs"] == layer["measured_ms"]
        assert entry["timeMs"] == pytest.approx(measured["runs"] * layer["measured_ms"])
        assert (entry["op_type"], entry["bound"], entry["ceiling"]) == (layer["op"], layer["bound"], layer["ceiling"])
        assert entry["flops"] == layer["group_flops"] and entry["bytes"] == layer["group_bytes"] > 0
        assert entry["peak_under_measured"] is False and "medianMs" not in entry
    assert sum(e["percentage"] for e in entries) == pytest.approx(100, abs=0.01)
    assert f"wrote {exported}" in result.stderr


def test_profile_table_sorts_by_time_and_says_tflite_has_no_timer(digits: Path, cache: Dict[str, str]) -> None:
    result = run_cli("profile", str(digits), "--top", "3", *QUICK, env=cache)
    assert result.code == 0, result.stderr
    blocks = result.stdout.split("\n\n")
    assert len(blocks) == 3  # onnxruntime/fp32, tflite/fp32, tflite/int8
    onnx_block = blocks[0].splitlines()
    header = next(i for i, line in enumerate(onnx_block) if line.startswith("layer "))
    rows = onnx_block[header + 1:]
    assert len(rows) == 3
    times = [float(row.split()[2]) for row in rows]
    assert times == sorted(times, reverse=True)
    # each row names its bound, and how close it came (a fraction of the roof) or, when the profiler's
    # calibrated overhead left no measurable time (a loaded machine), the lower-bound time instead
    assert all("-bound" in row and ("of roof" in row or ">= " in row) for row in rows)
    assert "runtime fusions: Conv + Relu (3x), MatMul + Add (1x)" in blocks[0]
    assert "the TFLite Python API has no per-op timer" in blocks[1]
    assert "whole model: p50" in blocks[2]


def test_static_profile_runs_nothing_and_sorts_by_macs(mobilenet: Path, cache: Dict[str, str]) -> None:
    result = run_cli("profile", str(mobilenet), "--static", "--precision", "fp32", "--json", env=cache)
    assert result.code == 0, result.stderr
    reports = result.json()
    assert {r["model"]["format"] for r in reports} == {"onnx", "tflite"}
    for report in reports:
        assert report["backend"]["name"] is None and report["latency"] is None
        assert report["profile"]["totals"]["macs"] >= 300_774_272
        assert all(layer["measured_ms"] is None for layer in report["profile"]["layers"])
        assert report["profile"]["measured"]["available"] is False
    # a static profile is judged by the runtime that runs its format (the cached figures are made up)
    compute = {r["model"]["format"]: r["profile"]["roofline"]["compute"] for r in reports}
    assert compute == {"onnx": {"onnxruntime/fp32": 800.0}, "tflite": {"tflite/fp32": 960.0}}
    table = run_cli("profile", str(mobilenet), "--static", "--backend", "onnxruntime", "--top", "4", env=cache)
    assert table.code == 0, table.stderr
    macs = [line.split()[4] for line in table.stdout.splitlines()[-4:]]
    assert macs[0] == "20.07M" and "static profile (not run)" in table.stdout


def test_scaling_sweeps_thread_counts_and_fits_amdahl(digits: Path, cache: Dict[str, str]) -> None:
    result = run_cli("profile", str(digits), "--backend", "onnxruntime", "--scaling", "--scaling-threads", "1,2",
                     "--json", *QUICK, env=cache)
    assert result.code == 0, result.stderr
    scaling = result.json()[0]["profile"]["scaling"]
    assert scaling["threads"] == [1, 2] and scaling["speedup"][0] == 1.0
    assert all(t > 0 for t in scaling["p50_ms"]) and scaling["efficiency"][1] == pytest.approx(
        scaling["speedup"][1] / 2, abs=1e-3)
    assert 0 <= scaling["amdahl"]["serial_fraction"] <= 1 and scaling["amdahl"]["points"] == 2


def test_plot_writes_both_charts(digits: Path, cache: Dict[str, str], tmp_path: Path) -> None:
    result = run_cli("profile", str(digits), "--backend", "onnxruntime", "--plot", str(tmp_path / "plots"),
                     *QUICK, env=cache)
    assert result.code == 0, result.stderr
    charts = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert charts == ["digits-onnxruntime-fp32-onnx-layers.png", "digits-onnxruntime-fp32-onnx-roofline.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in charts)


def test_plot_without_matplotlib_names_the_extra(digits: Path, cache: Dict[str, str], tmp_path: Path) -> None:
    """A board without the plot extra, made by shadowing matplotlib with a package that fails to import."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_cli("profile", str(digits), "--plot", str(tmp_path / "plots"),
                     env=dict(cache, PYTHONPATH=str(shadow.parent)))
    one_line_error(result, 2, "edge-agent[plot]")
    assert not (tmp_path / "plots").exists()


def test_peaks_measures_once_then_reads_the_cache(tmp_path: Path) -> None:
    from agent.device.detect import device_section

    env = {"EDGE_AGENT_CACHE_DIR": str(tmp_path)}
    fingerprint = device_section().fingerprint
    old = {"fingerprint": fingerprint, "fp32_gflops_single": 1.0, "bandwidth_gbs_all": 1.0}  # before format 2
    (tmp_path / "peaks.json").write_text(json.dumps({fingerprint: old}))
    first = run_cli("peaks", "--json", env=env)
    assert first.code == 0, first.stderr
    measured = first.json()
    assert measured["source"] == "measured now" and measured["format"] == 2  # the old entry is measured again
    assert measured["cache"] == str(tmp_path / "peaks.json")
    assert set(json.loads((tmp_path / "peaks.json").read_text())) == {measured["fingerprint"]}
    labels = {f"{c['runtime']}/{c['precision']}" for c in measured["compute"]}
    assert {"onnxruntime/fp32", "onnxruntime/int8", "tflite/fp32", "tflite/int8"} <= labels
    assert all(c["gflops_all"] >= c["gflops_single"] > 0 for c in measured["compute"])
    levels = [m["name"] for m in measured["memory"]]
    assert levels[-1] == "DRAM" and all(m["gbs_single"] > 0 for m in measured["memory"])
    if Path("/sys/devices/system/cpu/cpu0/cache/index0").is_dir():
        assert levels[0] == "L1" and measured["memory"][0]["size_bytes"] > 0
    second = run_cli("peaks", env=env)
    assert second.code == 0 and "cached" in second.stdout.splitlines()[0], second.stderr
    assert "onnxruntime/int8" in second.stdout and "DRAM" in second.stdout and "GB/s" in second.stdout
    refreshed = run_cli("peaks", "--refresh", "--json", env=env)
    assert refreshed.code == 0 and refreshed.json()["source"] == "measured now"


# ---- bad input: report what can be profiled, name what cannot, never a traceback --------------------

def test_an_unknown_op_is_named_while_the_runtime_refuses_the_model(tmp_path: Path, cache: Dict[str, str]) -> None:
    path = onnx_file(tmp_path / "odd.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                                             helper.make_node("Frobnicate", ["r"], ["y"], name="odd",
                                                              domain="com.example")],
                     {"x": [1, 16]}, {"y": [1, 16]}, {}, {"com.example": 1})
    result = run_cli("profile", str(path), "--json", *QUICK, env=cache)
    assert result.code == 4, result.stderr  # ONNX Runtime cannot load it: a model format error
    (report,) = result.json()
    assert report["status"] == "failed" and "ONNX Runtime cannot load" in report["error"]["message"]
    profile = report["profile"]
    assert profile["unknown_ops"] == [{"op": "Frobnicate", "count": 1, "layers": ["odd"]}]
    assert profile["totals"]["unknown_ops"] == 1 and profile["layers"][0]["flops"] == 16
    assert "Traceback" not in result.stderr


def test_dynamic_dims_not_given_then_given(tmp_path: Path, cache: Dict[str, str]) -> None:
    weight = np.zeros((4, 3, 3, 3), np.float32)
    path = onnx_file(tmp_path / "dynamic.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                     {"x": [1, 3, "h", "w_dim"]}, {"y": [1, 4, "oh", "ow"]}, {"w": weight})
    missing = run_cli("profile", str(path), *QUICK, env=cache)
    assert missing.code == 7, missing.stderr  # the run needs the dims: an input spec error
    assert "give it with --shape x=1,3,N,N" in missing.stdout and "1 not counted" in missing.stdout
    assert "per layer: not measured (the measurement failed)" in missing.stdout
    given = run_cli("profile", str(path), "--shape", "x=1,3,10,10", "--json", *QUICK, env=cache)
    assert given.code == 0, given.stderr
    (layer,) = given.json()[0]["profile"]["layers"]
    assert layer["macs"] == 4 * 8 * 8 * 27 and layer["measured_ms"] is not None


def test_both_branches_of_a_run_time_if_are_counted_and_the_rest_is_measured(tmp_path: Path,
                                                                            cache: Dict[str, str]) -> None:
    def branch(name: str, op: str):
        return helper.make_graph([helper.make_node(op, ["r"], [f"{name}_out"], name=f"{name}_op")], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 8])])

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="total", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["flag"], name="positive"),
             helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=branch("then", "Sigmoid"),
                              else_branch=branch("else", "Tanh"))]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              initializer=[numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "branchy.onnx"
    path.write_bytes(model.SerializeToString())
    result = run_cli("profile", str(path), "--json", *QUICK, env=cache)
    assert result.code == 0, result.stderr
    profile = result.json()[0]["profile"]
    assert profile["not_counted"] == []
    (entry,) = profile["control_flow"]
    assert (entry["layer"], entry["mode"], entry["branch"]) == ("choose", "both", "then_branch")
    names = [layer["name"] for layer in profile["layers"]]
    assert "choose/then_branch/then_op" in names and "choose/else_branch/else_op" in names
    assert profile["totals"]["flops"] == 8 + 7 + 1 + 4 * 8  # relu, sum, greater, the larger branch (sigmoid)
    relu = next(layer for layer in profile["layers"] if layer["name"] == "relu")
    assert relu["measured_ms"] is not None
    assert profile["measured"]["available"]


def test_a_custom_tflite_op_is_named_while_the_interpreter_refuses_it(tmp_path: Path,
                                                                     cache: Dict[str, str]) -> None:
    from support.tflite_nets import TFLiteBuilder

    b = TFLiteBuilder()
    x, relu, custom = b.tensor("x", [1, 4]), b.tensor("relu", [1, 4]), b.tensor("custom", [1, 4])
    b.op("RELU", [x], [relu])
    b.op("MyCustomOp", [relu], [custom])
    path = tmp_path / "custom.tflite"
    path.write_bytes(b.build([x], [custom]))
    result = run_cli("profile", str(path), "--json", *QUICK, env=cache)
    assert result.code == 4, result.stderr
    (report,) = result.json()
    assert report["status"] == "failed"
    assert report["profile"]["unknown_ops"] == [{"op": "MyCustomOp", "count": 1, "layers": ["mycustomop_1"]}]
    assert report["profile"]["layers"][0]["flops"] == 4


@pytest.mark.parametrize("static", [False, True])
def test_a_truncated_file_is_one_line_and_exit_4(digits: Path, tmp_path: Path, cache: Dict[str, str],
                                                 static: bool) -> None:
    whole = (digits / "model.fp32.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(whole[: len(whole) // 3])
    result = run_cli("profile", str(path), *(["--static"] if static else QUICK), env=cache)
    one_line_error(result, 4, "truncated.onnx")
    assert result.stdout == ""
