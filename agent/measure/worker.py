"""The measurement worker: loads one model with one backend and measures it, in its own process.

Run as `python -m agent.measure.worker`: it reads one JSON request on stdin and writes JSON lines to
its original stdout (progress events, then one `result` or `error`); anything a native runtime prints
is sent to stderr instead, which the parent keeps for error messages. See `isolate.py` for the parent.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

import numpy as np

from agent.backends.build import BuildSpec, CalibrationSet, Prepared
from agent.backends.registry import require_available
from agent.bundle import Preprocessing
from agent.errors import AgentError
from agent.measure import latency
from agent.measure.inputs import Feeder

# Set only by the test suite: lets a request make this worker crash or hang on purpose.
TEST_FAULTS_ENV = "EDGE_AGENT_TEST_FAULTS"


class Channel:
    """JSON lines to the parent, on a copy of the original stdout."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, event: str, **fields: Any) -> None:
        fields["event"] = event
        self.stream.write(json.dumps(fields) + "\n")
        self.stream.flush()


def rss_mb() -> Optional[float]:
    """Resident memory of this process in MB, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def thermal_snapshot() -> Any:
    """Temperatures, clocks and throttle flags now, through the board reader."""
    from agent.device.sysfs import SysfsReader
    from agent.device.telemetry import read_thermal

    return read_thermal(SysfsReader("/"))


def _fault(kind: Optional[str]) -> None:
    if not kind or os.environ.get(TEST_FAULTS_ENV) != "1":
        return
    if kind == "segfault":
        import ctypes
        ctypes.string_at(0)
    elif kind == "abort":
        os.abort()
    elif kind == "hang":
        time.sleep(3600)
    elif kind == "exit":
        os._exit(3)
    elif kind == "oom":  # 16 GiB of address space, never touched: fails at once under a memory limit
        np.empty(16 << 30, dtype=np.uint8)


def limit_memory(megabytes: Optional[int]) -> None:
    """Cap this process's address space (RLIMIT_AS) before any model is loaded: a runtime that
    needs more then fails with an allocation error instead of pushing the board into swap or OOM."""
    if megabytes:
        size = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


def measure(request: Dict[str, Any], channel: Channel) -> Dict[str, Any]:
    """Carry out one request: load, feed, time and/or run the output pass; return the result fields."""
    backend = require_available(request["backend"])
    status = backend.status()
    model_path = Path(request["model"]["path"])
    feed_spec = request["inputs"]
    prepared = _prepare(backend, model_path, request, channel)
    if prepared is not None:
        model_path = prepared.path
    thermal_before = thermal_snapshot()
    baseline_rss = rss_mb()

    channel.send("progress", phase="load")
    start = time.perf_counter_ns()
    session = backend.load(model_path, request["threads"], request["options"])
    load_ms = (time.perf_counter_ns() - start) / 1e6
    rss_loaded = rss_mb()
    _fault(request.get("fault"))

    samples = None
    data = feed_spec.get("data")
    if data:
        samples = np.load(data["path"], allow_pickle=False)["x"][:data.get("limit")]
    prep = feed_spec.get("preprocessing")
    # A bundle names its inputs in the manifest; the file's own names may differ: both are accepted.
    bundle_names = dict(zip((t.name for t in session.inputs), feed_spec.get("names", [])))
    aliases = {bundle: own for own, bundle in bundle_names.items()}
    files = {aliases.get(k, k): v for k, v in feed_spec.get("files", {}).items()}
    overrides = {aliases.get(k, k): v for k, v in feed_spec.get("shapes", {}).items()}
    feeder = Feeder(session.inputs, files, feed_spec.get("seed", 0), samples,
                    Preprocessing(**prep) if prep else None, feed_spec.get("layout", "ANY"))
    batches: List[int] = feed_spec.get("batch") or [1]
    shapes = feeder.shapes(batches[0], overrides)
    session.resize(shapes)

    result: Dict[str, Any] = {
        "backend": {"name": backend.name, "version": status.version, "configuration": session.configuration},
        "precision": session.precision,
        "inputs": [dict(t.to_dict(), bundle_name=bundle_names.get(t.name), resolved_shape=list(s))
                   for t, s in zip(session.inputs, shapes)],
        "outputs": [t.to_dict() for t in session.outputs],
        "input_source": "evaluation split" if feeder.uses_samples(shapes) else "generated or given",
        "load_ms": load_ms,
        "prepared": None if prepared is None else prepared.to_dict(),
    }
    if prepared is not None:
        result["backend"]["configuration"] = dict(session.configuration,
                                                  build=dict(prepared.details, warnings=prepared.warnings))
    plan = request.get("latency")
    if plan:
        result.update(_time(session, feeder, shapes, batches, plan, overrides, channel))
    result["memory"] = {
        "baseline_rss_mb": baseline_rss,
        "rss_after_load_mb": rss_loaded,
        "model_added_mb": None if baseline_rss is None or rss_loaded is None else rss_loaded - baseline_rss,
        "peak_rss_mb": peak_rss_mb(),
    }
    if request.get("trace"):  # `edge-agent profile`: the runtime's per-op timer, on a second session
        from agent.measure.trace import trace_runs
        channel.send("progress", phase="trace")
        result["trace"] = trace_runs(backend, model_path, request["threads"], request["options"], shapes,
                                     feeder.batch(shapes), request["trace"])
    if request.get("outputs"):
        result["output_pass"] = _output_pass(session, feeder, shapes, request["outputs"], channel)
    from agent.device.telemetry import throttle_report
    result["thermal"] = throttle_report(thermal_before, thermal_snapshot())
    session.close()
    return result


def _prepare(backend: Any, model_path: Path, request: Dict[str, Any], channel: Channel) -> Optional[Prepared]:
    """Let the backend make what it loads (a quantized model, an engine) before anything is timed."""
    feed_spec = request["inputs"]
    spec = BuildSpec(request.get("precision"), CalibrationSet.from_dict(request.get("calibration")),
                     tuple(feed_spec.get("batch") or [1]), feed_spec.get("shapes", {}),
                     tuple(feed_spec.get("names", [])))
    if spec.precision is not None:  # quantizing or building an engine: seconds to minutes
        channel.send("progress", phase="prepare", precision=spec.precision)
    return backend.prepare(model_path, spec, request["options"])


def _time(session: Any, feeder: Feeder, shapes: List[Any], batches: List[int], plan: Dict[str, Any],
          overrides: Dict[str, Any], channel: Channel) -> Dict[str, Any]:
    """First (cold) inference, warm-up, and the timed loop for every batch size asked for."""
    warmup = latency.Warmup(plan["warmup_count"], plan["warmup_seconds"])
    call = session.bind(feeder.batch(shapes))
    first_ms = latency.time_once(call)
    by_batch = []
    for index, batch in enumerate(batches):
        if index:
            shapes = feeder.shapes(batch, overrides)
            session.resize(shapes)
            call = session.bind(feeder.batch(shapes))
        channel.send("progress", phase="warmup", batch=batch)
        latency.warm_up(call, warmup)
        channel.send("progress", phase="measure", batch=batch, seconds=plan["min_seconds"])
        times = latency.measure(call, plan["iterations"], plan["min_seconds"])
        summary = latency.summarize(times, batch)
        device_times = session.device_times_ns()
        if device_times:  # the device's own time for the measured calls (the last ones), without copies
            summary["device_compute"] = latency.summarize(device_times[-len(times):], batch)
        by_batch.append(summary)
    return {"first_ms": first_ms, "latency": by_batch[0], "by_batch": by_batch if len(by_batch) > 1 else None}


def _output_pass(session: Any, feeder: Feeder, shapes: List[Any], spec: Dict[str, Any],
                 channel: Channel) -> Dict[str, Any]:
    """Run the evaluation samples (or seeded generated batches) and save the first output's rows."""
    session.resize(shapes)
    if feeder.uses_samples(shapes):
        total = len(feeder.samples)  # type: ignore[arg-type]
        batches = feeder.sample_batches(shapes)
    else:
        total = spec["generated_batches"] * shapes[0][0]
        batches = feeder.generated_batches(shapes, spec["generated_batches"])
    rows = []
    done = 0
    for valid, feeds in batches:
        rows.append(session.run(feeds)[0][:valid])
        done += valid
        channel.send("progress", phase="outputs", done=done, total=total)
    outputs = np.concatenate(rows)
    np.save(spec["save"], outputs)
    return {"file": spec["save"], "samples": int(len(outputs)), "from": "evaluation split"
            if feeder.uses_samples(shapes) else "generated"}


def main() -> int:
    """Entry point: read the request, measure, answer on the protocol channel."""
    channel = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)  # native runtimes print to fd 1: keep those lines out of the protocol
    sys.stdout = sys.stderr
    request: Dict[str, Any] = {}
    try:
        request = json.loads(sys.stdin.read())
        limit_memory(request.get("memory_limit_mb"))
        channel.send("result", result=measure(request, channel))
    except MemoryError as exc:
        limit = request.get("memory_limit_mb")
        channel.send("error", type="WorkerError", message=f"out of memory{f' (limit {limit} MB)' if limit else ''}: "
                                                          f"{exc or 'an allocation failed'}")
    except AgentError as exc:
        channel.send("error", type=type(exc).__name__, message=str(exc))
    except Exception as exc:  # a runtime's own exception type: reported, never a traceback on the parent
        channel.send("error", type="WorkerError", message=f"{type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
