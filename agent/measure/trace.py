"""The runtime's own per-op timer, run inside the measurement worker: ONNX Runtime's profiling trace
(TensorRT: its IProfiler's per-layer times, `_engine_layers`).

`trace_runs` loads the model a second time with ONNX Runtime's profiler on (the backend option
`profile_dir`), runs it `warmup + runs` times on the same feeds as the latency loop, and reads back
two files ONNX Runtime writes: the Chrome-trace JSON (one `Node` event per kernel call, durations
in whole microseconds) and the optimized graph it actually ran (after its fusions and layout
changes), which `join.py` maps back onto the model's own layers. The latency loop runs on a session
without the profiler, so the whole-model latency is measured the normal way.

Two costs are not the model's work, and both are measured on a one-node model (the Relu of one
number) run with the same threads and options: the profiler's own time inside each node's window
(timestamps, the event's arguments; about 2 µs per node on a desktop CPU, as much as a small
layer's whole work), which is subtracted from every node (never below zero; `raw_ms` keeps the
uncorrected figure), and the fixed cost of one call from Python without the profiler (binding the
inputs, allocating the outputs, starting the executor: `call_overhead_ms`), which no node carries.
"""

from __future__ import annotations

import bisect
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.measure import latency
from agent.measure.messages import TraceSettings

# Runtimes without a per-op timer reachable from Python, and what the report says about them.
NO_TIMER = {"tflite": "the TFLite Python API has no per-op timer: whole-model figures only"}
# Attributes of a runtime node that help align it with the model's layer (kernel geometry).
ALIGN_ATTRIBUTES = ("kernel_shape", "strides", "group")
KERNEL_SUFFIX = "_kernel_time"


def trace_runs(backend: Any, path: Path, threads: int, options: Dict[str, Any], shapes: Sequence[Tuple[int, ...]],
               feeds: Sequence[np.ndarray], plan: TraceSettings) -> Dict[str, Any]:
    """Per-node times of `runs` profiled runs (after `warmup`), and the graph the runtime ran; `model`
    is the file traced (a backend may have prepared it from the bundle's file, e.g. quantized it)."""
    if backend.name == "tensorrt":
        return _engine_layers(backend, path, threads, options, shapes, feeds, plan)
    if backend.name != "onnxruntime":
        reason = NO_TIMER.get(backend.name, f"{backend.name} has no per-op timer edge-agent can read")
        return {"available": False, "runtime": backend.name, "reason": reason, "model": str(path)}
    warmup, runs = plan.warmup, max(1, plan.runs)
    with tempfile.TemporaryDirectory(prefix="edge-agent-trace-") as folder:
        events = _profiled(backend, path, threads, options, shapes, feeds, warmup + runs, Path(folder))
        graph = runtime_graph(Path(folder) / "optimized.onnx")
        null = null_model(Path(folder) / "null")
        costs = _null_costs(backend, null, threads, options, warmup, runs) if null else {}
    nodes, run_ms, node_sums = node_times(events, warmup)
    for node in nodes:
        node["raw_ms"] = node["ms"]
        node["ms"] = round(max(0.0, node["ms"] - costs.get("profiler_cost_ms_per_node", 0.0)), 6)
    return dict(costs, available=True, runtime="onnxruntime", model=str(path), runs=runs, warmup=warmup,
                run_p50_ms=float(np.median(run_ms)) if run_ms else None,
                node_sum_p50_ms=float(np.median(node_sums)) if node_sums else None, nodes=nodes, graph=graph)


def _engine_layers(backend: Any, path: Path, threads: int, options: Dict[str, Any], shapes: Sequence[Tuple[int, ...]],
                   feeds: Sequence[np.ndarray], plan: TraceSettings) -> Dict[str, Any]:
    """TensorRT: per engine layer, the mean time of `runs` runs from its IProfiler (the session's
    `layer_times`, on a second execution context). Unverified on hardware."""
    session = backend.load(path, threads, options)
    session.resize(shapes)
    session.bind(list(feeds))  # copies the feeds into the session's input buffers
    runs = max(1, plan.runs)
    layers = session.layer_times(runs)
    session.close()
    nodes = [{"name": layer["name"], "op": None, "ms": layer["mean_ms"], "raw_ms": layer["mean_ms"]}
             for layer in layers]
    return {"available": True, "runtime": "tensorrt", "model": str(path), "runs": runs, "warmup": 0,
            "run_p50_ms": None, "node_sum_p50_ms": round(sum(n["ms"] for n in nodes), 6), "nodes": nodes,
            "graph": None, "verified_on_hardware": False}


def _profiled(backend: Any, path: Path, threads: int, options: Dict[str, Any], shapes: Sequence[Tuple[int, ...]],
              feeds: Sequence[np.ndarray], calls: int, folder: Path) -> List[Dict[str, Any]]:
    """The trace events of `calls` runs of `path` with ONNX Runtime's profiler writing into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    session = backend.load(path, threads, dict(options, profile_dir=str(folder)))
    session.resize(shapes)
    call = session.bind(feeds)
    for _ in range(calls):
        call()
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    session.close()
    return events


def null_model(folder: Path) -> Optional[Path]:
    """A one-node model with next to no work (the Relu of one number); None without the onnx package."""
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    value = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="null")], "null", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # readable by every ONNX Runtime edge-agent supports
    path = folder / "null.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _null_costs(backend: Any, null: Path, threads: int, options: Dict[str, Any], warmup: int,
                runs: int) -> Dict[str, float]:
    """What the runtime costs besides the model's work, from the null model run like the model:
    the profiler's time inside each node's window, and one whole call without the profiler."""
    feeds = [np.ones(1, np.float32)]
    nodes, _, _ = node_times(_profiled(backend, null, threads, options, [(1,)], feeds, warmup + runs,
                                       null.parent), warmup)
    session = backend.load(null, threads, options)
    call = session.bind(feeds)
    latency.warm_up(call, latency.Warmup(warmup, 0.0))
    call_ms = float(np.median(latency.measure(call, runs, 0.0))) / 1e6
    session.close()
    return {"profiler_cost_ms_per_node": nodes[0]["ms"] if nodes else 0.0, "call_overhead_ms": round(call_ms, 6)}


def interquartile_mean(values: Sequence[float]) -> float:
    """The mean of the middle half: robust to outliers like a median, finer than whole-µs steps."""
    ordered = sorted(values)
    quarter = len(ordered) // 4
    middle = ordered[quarter:len(ordered) - quarter] or ordered
    return float(sum(middle) / len(middle))


def node_times(events: List[Dict[str, Any]],
               warmup: int) -> Tuple[List[Dict[str, Any]], List[float], List[float]]:
    """Per-node times (ms) from ORT's trace, warm-up runs dropped; each run's own duration; and each
    run's sum over its nodes.

    A node's time in one run is the sum of its kernel events in that run (0 when it did not run, as
    a branch not taken); per node the figure is the interquartile mean over the runs.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    if not runs:
        return [], [], []
    starts = [r["ts"] for r in runs]
    per_node: Dict[str, Dict[str, Any]] = {}
    per_run = [dict() for _ in runs]  # type: List[Dict[str, float]]
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index < 0 or event["ts"] > runs[index]["ts"] + runs[index]["dur"]:
            continue  # a warm-up run's node
        node = name[:-len(KERNEL_SUFFIX)]
        args = event.get("args", {})
        per_node.setdefault(node, {"name": node, "op": args.get("op_name"), "provider": args.get("provider")})
        per_run[index][node] = per_run[index].get(node, 0.0) + event["dur"] / 1e3
    for node, entry in per_node.items():
        times = [run.get(node, 0.0) for run in per_run]
        entry.update(ms=round(interquartile_mean(times), 6), p50_ms=float(np.median(times)))
    return list(per_node.values()), [r["dur"] / 1e3 for r in runs], [sum(run.values()) for run in per_run]


def runtime_graph(path: Path) -> Optional[Dict[str, Any]]:
    """The nodes of the optimized graph the runtime saved (activation inputs only, kernel attributes),
    and its constant names; None when the file or the onnx package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    if not path.is_file():
        return None
    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: list(onnx.helper.get_attribute_value(a)) if a.ints else [a.i]
                      for a in node.attribute if a.name in ALIGN_ATTRIBUTES}
        nodes.append({"name": node.name, "op": node.op_type, "domain": node.domain,
                      "inputs": [n for n in node.input if n and n not in constants],
                      "outputs": [n for n in node.output if n], "attributes": attributes})
    return {"nodes": nodes, "constants": sorted(constants)}
