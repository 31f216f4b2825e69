"""The measurement worker: loads one model with one backend and measures it, in its own process.

Run as `python -m agent.measure.worker`: it reads one JSON request on stdin and writes JSON lines to
its original stdout (progress events, then one `result` or `error`); anything a native runtime prints
is sent to stderr instead, which the parent keeps for error messages. The pipe's both sides are
agent/measure/isolate.py's (`run_child`, `serve`); the worker also dies with its parent.
"""

from __future__ import annotations

import importlib
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from agent.backends.build import BuildSpec, Prepared
from agent.backends.registry import require_available
from agent.device.sysfs import SysfsReader
from agent.device.telemetry import LoadProbe, ThermalProbe, read_thermal, throttle_report
from agent.errors import AgentError, MemoryLimitError
from agent.measure import latency, stability
from agent.measure.inputs import Feeder
from agent.measure.isolate import Channel, serve
from agent.measure.messages import (
    BackendRun,
    MemoryUse,
    OutputPass,
    OutputSpec,
    RunTimes,
    Timing,
    WorkerRequest,
    WorkerResult,
)
from agent.measure.trace import trace_runs

# How runtimes word a failed allocation (ONNX Runtime's arena, numpy, C++, the C library).
_ALLOCATION_FAILED = re.compile(r"Failed to allocate memory for requested buffer of size \d+|Unable to allocate [^\n]*|"
                               r"std::bad_alloc|Cannot allocate memory")
# `module:function`, called with the request after the load and before anything is timed; set only by
# the test suite (tests/support/faults.py), in the environment the worker inherits.
WORKER_HOOK_ENV = "EDGE_AGENT_WORKER_HOOK"


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
    return read_thermal(SysfsReader("/"))


def cpu_seconds() -> float:
    """CPU time this process has used (user + system, every thread), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def limit_memory(megabytes: Optional[int]) -> None:
    """Cap this process's address space (RLIMIT_AS) before any model is loaded: a runtime that
    needs more then fails with an allocation error instead of pushing the board into swap or OOM."""
    if megabytes:
        size = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


def measure(request: WorkerRequest, channel: Channel) -> WorkerResult:
    """Carry out one request: load, feed, time and/or run the output pass; return what was measured."""
    backend = require_available(request.backend)
    status = backend.status()
    model_path = Path(request.model.path)
    feed_spec = request.feed
    prepared = _prepare(backend, model_path, request, channel)
    if prepared is not None:
        model_path = prepared.path
    thermal_before = thermal_snapshot()
    baseline_rss = rss_mb()

    channel.send("progress", phase="load")
    start = time.perf_counter_ns()
    session = backend.load(model_path, request.threads, request.options)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    rss_loaded = rss_mb()
    hook = worker_hook()
    if hook is not None:
        hook(request)

    samples = None
    if feed_spec.data is not None:
        samples = np.load(feed_spec.data.path, allow_pickle=False)["x"][:feed_spec.data.limit]
    # A bundle names its inputs in the manifest; the file's own names may differ: both are accepted.
    bundle_names = dict(zip((t.name for t in session.inputs), feed_spec.names))
    aliases = {bundle: own for own, bundle in bundle_names.items()}
    files = {aliases.get(k, k): v for k, v in feed_spec.files.items()}
    overrides: Dict[str, Sequence[int]] = {aliases.get(k, k): v for k, v in feed_spec.shapes.items()}
    feeder = Feeder(session.inputs, files, feed_spec.seed, samples, feed_spec.preprocessing, feed_spec.layout)
    batches: List[int] = feed_spec.batch or [1]
    shapes = feeder.shapes(batches[0], overrides)
    session.resize(shapes)

    configuration = session.configuration
    if prepared is not None:
        configuration = dict(configuration, build=dict(prepared.details, warnings=prepared.warnings))
    timing = None
    if request.latency is not None:
        timing = _time(session, feeder, shapes, batches, request.latency, overrides, request.threads, channel)
    memory = MemoryUse(baseline_rss, rss_loaded,
                       None if baseline_rss is None or rss_loaded is None else rss_loaded - baseline_rss,
                       peak_rss_mb())
    trace = None
    if request.trace is not None:  # `edge-agent profile`: the runtime's per-op timer, on a second session
        channel.send("progress", phase="trace")
        trace = trace_runs(backend, model_path, request.threads, request.options, shapes, feeder.batch(shapes),
                           request.trace)
    output_pass = None
    if request.outputs is not None:
        output_pass = _output_pass(session, feeder, shapes, request.outputs, channel)
    thermal = throttle_report(thermal_before, thermal_snapshot())
    session.close()
    return WorkerResult(
        backend=BackendRun(backend.name, status.version, configuration), precision=session.precision,
        inputs=[dict(t.to_dict(), bundle_name=bundle_names.get(t.name), resolved_shape=list(s))
                for t, s in zip(session.inputs, shapes)],
        load_ms=load_ms, memory=memory, thermal=thermal,
        build_warnings=[] if prepared is None else prepared.warnings,
        timing=timing, trace=trace, output_pass=output_pass)


def worker_hook() -> Optional[Callable[[WorkerRequest], None]]:
    """The function `EDGE_AGENT_WORKER_HOOK=module:function` names (None when it is unset): the test suite's
    way to make this worker crash or hang on purpose. Only the environment sets it, never a request."""
    spec = os.environ.get(WORKER_HOOK_ENV)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    hook: Callable[[WorkerRequest], None] = getattr(importlib.import_module(module), name)
    return hook


def _prepare(backend: Any, model_path: Path, request: WorkerRequest, channel: Channel) -> Optional[Prepared]:
    """Let the backend make what it loads (a quantized model, an engine) before anything is timed."""
    feed_spec = request.feed
    spec = BuildSpec(request.precision, request.calibration, tuple(feed_spec.batch or [1]), feed_spec.shapes,
                     tuple(feed_spec.names))
    if spec.precision is not None:  # quantizing or building an engine: seconds to minutes
        channel.send("progress", phase="prepare", precision=spec.precision)
    return backend.prepare(model_path, spec, request.options)


def _time(session: Any, feeder: Feeder, shapes: List[Any], batches: List[int], plan: latency.LoopPlan,
          overrides: Dict[str, Any], threads: int, channel: Channel) -> Timing:
    """First (cold) inference, warm-up, and the timed loop (in rounds, judged for stability with the machine's
    state read just around it) for every batch size asked for."""
    call = session.bind(feeder.batch(shapes))
    first_ms = latency.time_once(call)
    thermal, load = ThermalProbe(SysfsReader("/")), LoadProbe(SysfsReader("/"))
    by_batch, runs = [], []
    for index, batch in enumerate(batches):
        if index:
            shapes = feeder.shapes(batch, overrides)
            session.resize(shapes)
            call = session.bind(feeder.batch(shapes))
        channel.send("progress", phase="warmup", batch=batch)
        latency.warm_up(call, plan.warmup)
        channel.send("progress", phase="measure", batch=batch, seconds=plan.min_seconds)
        thermal_before, load_before, cpu_before = thermal.snapshot(), load.snapshot(), cpu_seconds()
        rounds = latency.measure_rounds(call, plan.iterations, plan.min_seconds, plan.rounds)
        cpu_after, load_after, thermal_after = cpu_seconds(), load.snapshot(), thermal.snapshot()
        environment = stability.LoopEnvironment(thermal_before, thermal_after, load_before, load_after,
                                                cpu_after - cpu_before, stability.online_cpus(), threads)
        durations = [r.durations_ns for r in rounds]
        times = [t for r in durations for t in r]
        summary = latency.summarize(times, batch)
        summary.update(rounds=len(rounds), stability=stability.judge(durations, environment).to_dict(),
                       environment=environment.to_dict())
        device_times = session.device_times_ns()
        if device_times:  # the device's own time for the measured calls (the last ones), without copies
            summary["device_compute"] = latency.summarize(device_times[-len(times):], batch)
        by_batch.append(summary)
        if plan.keep_times:
            runs.append(_run_times(batch, rounds))
    return Timing(first_ms, by_batch[0], by_batch if len(by_batch) > 1 else None, runs if plan.keep_times else None)


def _run_times(batch: int, rounds: List[latency.TimedRound]) -> RunTimes:
    """Every timed call of one batch size, in ms from the first call's start."""
    origin = rounds[0].starts_ns[0]
    numbers, starts, latencies = [], [], []
    for number, timed in enumerate(rounds):
        for start, end in zip(timed.starts_ns, timed.ends_ns):
            numbers.append(number)
            starts.append(round((start - origin) / 1e6, 6))
            latencies.append(round((end - start) / 1e6, 6))
    return RunTimes(batch, numbers, starts, latencies)


def _output_pass(session: Any, feeder: Feeder, shapes: List[Any], spec: OutputSpec, channel: Channel) -> OutputPass:
    """Run the evaluation samples (or seeded generated batches) and save the first output's rows."""
    session.resize(shapes)
    from_evaluation = feeder.uses_samples(shapes)
    if from_evaluation:
        total = len(feeder.samples)  # type: ignore[arg-type]
        batches = feeder.sample_batches(shapes)
    else:
        total = spec.generated_batches * shapes[0][0]
        batches = feeder.generated_batches(shapes, spec.generated_batches)
    rows = []
    done = 0
    for valid, feeds in batches:
        rows.append(session.run(feeds)[0][:valid])
        done += valid
        channel.send("progress", phase="outputs", done=done, total=total)
    np.save(spec.save, np.concatenate(rows))
    return OutputPass(spec.save, from_evaluation)


def main() -> int:
    """Entry point: read the request, measure, answer on the protocol channel (agent.measure.isolate.serve)."""
    return serve(_run)


def _run(payload: Dict[str, Any], channel: Channel) -> Dict[str, Any]:
    """Measure under the request's memory limit; an allocation that fails becomes a `MemoryLimitError` naming
    the limit and, in the runtime's words, the size asked for."""
    request = WorkerRequest.from_dict(payload)
    limit_memory(request.memory_limit_mb)
    try:
        return measure(request, channel).to_dict()
    except AgentError:
        raise
    except MemoryError as exc:
        raise MemoryLimitError(_out_of_memory(request.memory_limit_mb, str(exc) or "an allocation failed")) from None
    except Exception as exc:  # a runtime's own error: an allocation failure is told apart by its words
        words = _ALLOCATION_FAILED.search(str(exc))
        if words is None:
            raise
        raise MemoryLimitError(_out_of_memory(request.memory_limit_mb, words.group(0))) from None


def _out_of_memory(limit: Optional[int], what: str) -> str:
    return f"out of memory{f' (limit {limit} MB)' if limit else ''}: {what}"


if __name__ == "__main__":
    sys.exit(main())
