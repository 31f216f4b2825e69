"""Reading ONNX Runtime's profiling trace: per-node times per run, warm-up dropped, the profiler's own
cost taken off; a real trace of the digits model; TFLite saying it has no per-op timer."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from agent.backends.registry import get_backend
from agent.measure.messages import TraceSettings
from agent.measure.trace import interquartile_mean, node_times, trace_runs


def run_event(start: int, duration: int) -> Dict:
    return {"cat": "Session", "name": "model_run", "ts": start, "dur": duration}


def kernel(name: str, start: int, duration: int, op: str = "Conv") -> Dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": start, "dur": duration,
            "args": {"op_name": op, "provider": "CPUExecutionProvider"}}


def test_warmup_runs_are_dropped_and_a_node_absent_from_a_run_counts_zero() -> None:
    events: List[Dict] = [run_event(0, 100), kernel("conv", 10, 90)]  # the warm-up run
    for start, branch in ((1000, 30), (2000, None), (3000, 30), (4000, None)):
        events += [run_event(start, 100), kernel("conv", start + 5, 40),
                   {"cat": "Node", "name": "conv_fence_before", "ts": start + 4, "dur": 1}]  # older ORT: ignored
        if branch is not None:
            events.append(kernel("branch", start + 50, branch, op="Relu"))
    nodes, run_ms, sums = node_times(events, warmup=1)
    by_name = {n["name"]: n for n in nodes}
    assert by_name["conv"]["ms"] == pytest.approx(0.040) and by_name["conv"]["op"] == "Conv"
    assert by_name["branch"]["p50_ms"] == pytest.approx(0.015)  # 30 µs in half the runs
    assert run_ms == [0.1] * 4
    assert sums == pytest.approx([0.07, 0.04, 0.07, 0.04])


def test_a_node_called_twice_in_one_run_sums_its_calls() -> None:
    events = [run_event(0, 100), kernel("loop_body", 10, 20), kernel("loop_body", 40, 20)]
    nodes, _, _ = node_times(events, warmup=0)
    assert nodes[0]["ms"] == pytest.approx(0.040)


def test_interquartile_mean_ignores_outliers_and_resolves_below_the_step() -> None:
    assert interquartile_mean([2, 2, 3, 3, 3, 2, 2, 3, 100, 0.0]) == pytest.approx(2.5)
    assert interquartile_mean([5.0]) == 5.0


def test_no_runs_in_the_trace_gives_no_nodes() -> None:
    assert node_times([kernel("conv", 0, 10)], warmup=0) == ([], [], [])


def feeds_for(path: Path):
    backend = get_backend("onnxruntime")
    options = backend.validate_options({})
    session = backend.load(path, 1, options)
    shape = tuple(d if isinstance(d, int) else 1 for d in session.inputs[0].shape)
    return backend, options, shape, [np.random.default_rng(0).random(shape, dtype=np.float32)]


def test_real_trace_of_digits(digits: Path) -> None:
    path = digits / "model.fp32.onnx"
    backend, options, shape, feeds = feeds_for(path)
    trace = trace_runs(backend, path, 1, options, [shape], feeds, TraceSettings(20, 3))
    assert trace["available"] and trace["runs"] == 20 and trace["model"] == str(path)
    assert 0 < trace["profiler_cost_ms_per_node"] < 0.5 and 0 < trace["call_overhead_ms"] < 1
    ops = sorted(n["op"] for n in trace["nodes"])
    assert ops.count("Conv") == 3 and "Gemm" in ops  # the runtime's own ops: MatMul + Add ran as one Gemm
    for entry in trace["nodes"]:
        assert entry["raw_ms"] >= entry["ms"] >= 0
        assert entry["ms"] == pytest.approx(max(0.0, entry["raw_ms"] - trace["profiler_cost_ms_per_node"]), abs=1e-6)
    assert {n["name"] for n in trace["graph"]["nodes"]} == {n["name"] for n in trace["nodes"]}
    assert trace["run_p50_ms"] > 0


def test_tflite_has_no_per_op_timer(digits: Path) -> None:
    trace = trace_runs(get_backend("tflite"), digits / "model.fp32.tflite", 1, {}, [], [], TraceSettings(5))
    assert trace["available"] is False and "no per-op timer" in trace["reason"]
