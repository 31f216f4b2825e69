"""One configuration measured in its worker process: the worker's request built from the job's, the
worker run under its time limit, and its result turned into a report (failed runs included).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from agent.backends.build import CalibrationSet
from agent.bundle import Bundle
from agent.device.detect import DeviceSection
from agent.errors import AgentError
from agent.measure import accuracy
from agent.measure.isolate import ProgressHandler, run_child
from agent.measure.latency import LoopPlan
from agent.measure.messages import BackendRun, FeedSpec, ModelRef, OutputSpec, SampleRef, WorkerRequest, WorkerResult
from agent.measure.plan import Configuration, MeasureRequest, default_threads
from agent.report import Report

# Seeded batches for fidelity when a bundle has no evaluation samples.
FIDELITY_BATCHES = 8


def run_worker(request: WorkerRequest, time_limit_s: float, on_progress: Optional[ProgressHandler] = None,
               should_cancel: Optional[Callable[[], bool]] = None) -> WorkerResult:
    """Run `request` in a fresh `python -m agent.measure.worker` (agent.measure.isolate: its own process
    group, killed at `time_limit_s` or when `should_cancel` says so) and return its result."""
    limit = request.memory_limit_mb
    return WorkerResult.from_dict(run_child("agent.measure.worker", request.to_dict(), time_limit_s, on_progress,
                                            should_cancel, note=f" (it ran under a {limit} MB memory limit)"
                                            if limit else ""))


def build_request(bundle: Bundle, config: Configuration, request: MeasureRequest, output_file: Path,
                  with_latency: bool, with_outputs: bool = True) -> WorkerRequest:
    """The worker's request for one configuration: the latency loop (and trace) only `with_latency`, the
    output pass only `with_outputs` and for bundles."""
    options = config.backend.validate_options(
        {k: v for k, v in request.options.items() if k in config.backend.option_defaults})
    spec = bundle.inputs[0] if bundle.inputs else None
    evaluation = bundle.evaluation
    feed = FeedSpec(request.batch, request.shapes, request.inputs, request.seed, [t.name for t in bundle.inputs],
                    None if evaluation is None else SampleRef(str(evaluation.path), request.eval_limit),
                    spec.layout if spec else "ANY", bundle.preprocessing)
    return WorkerRequest(
        model=ModelRef(str(config.model.path), config.model.format), backend=config.backend.name,
        threads=request.threads or default_threads(), options=options, feed=feed, precision=config.derived,
        calibration=CalibrationSet.from_bundle(bundle) if config.derived == "int8" else None,
        latency=LoopPlan(request.warmup, request.iterations, request.min_seconds, request.rounds,
                         request.keep_times) if with_latency else None,
        outputs=None if bundle.is_plain_file or not with_outputs else OutputSpec(str(output_file), FIDELITY_BATCHES),
        trace=request.trace if with_latency else None, memory_limit_mb=request.memory_limit_mb)


def measure_configuration(bundle: Bundle, config: Configuration, request: MeasureRequest, device: DeviceSection,
                          output_file: Path, on_progress: Optional[ProgressHandler] = None,
                          with_outputs: bool = True) -> Tuple[Report, Optional[np.ndarray]]:
    """Measure one configuration in a worker: its report, and its first output's rows (for fidelity)."""
    model_section = {"name": bundle.name, "path": str(config.model.path), "sha256": config.model.sha256,
                     "bytes": config.model.size_bytes, "format": config.model.format,
                     "precision": config.precision, "bundle": None if bundle.is_plain_file else str(bundle.root)}
    worker_request = build_request(bundle, config, request, output_file, request.measures_latency, with_outputs)
    try:
        result = run_worker(worker_request, request.time_limit_s, on_progress, request.should_cancel)
    except AgentError as exc:
        backend = BackendRun(config.backend.name, config.backend.status().version, worker_request.options)
        report = Report(request.kind, device, model_section, asdict(backend), status="failed",
                        error={"type": type(exc).__name__, "message": str(exc)})
        return report, None
    if bundle.is_plain_file and not config.derived:
        model_section["precision"] = result.precision
    for warning in result.build_warnings:
        logging.getLogger("edge-agent").warning("%s: %s", config.label, warning)
    report = Report(request.kind, device, model_section, asdict(result.backend), inputs=result.inputs,
                    memory=asdict(result.memory), thermal=result.thermal)
    if result.timing is not None:
        report.latency = dict(load_ms=result.load_ms, first_ms=result.timing.first_ms, **result.timing.latency)
        report.latency_by_batch = result.timing.by_batch
        report.run_times = None if result.timing.runs is None else [asdict(r) for r in result.timing.runs]
    if result.trace is not None:
        report.profile = {"trace": result.trace}
    if result.output_pass is None:
        return report, None
    outputs = np.load(result.output_pass.file)
    if result.output_pass.from_evaluation and bundle.evaluation is not None:
        _, labels = bundle.evaluation.load(request.eval_limit)
        if labels is not None:
            report.accuracy = dict(accuracy.topk_accuracy(outputs, labels), split="evaluation")
    return report, outputs
