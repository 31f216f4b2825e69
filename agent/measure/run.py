"""One configuration measured in its worker process: the worker's request built from the job's, the
worker run under its time limit, and its result turned into a report (failed runs included).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from agent.backends.build import CalibrationSet
from agent.bundle import Bundle
from agent.errors import AgentError
from agent.measure import accuracy
from agent.measure.isolate import ProgressHandler, run_worker
from agent.measure.plan import Configuration, MeasureRequest, default_threads
from agent.report import Report

# Seeded batches for fidelity when a bundle has no evaluation samples.
FIDELITY_BATCHES = 8


def build_request(bundle: Bundle, config: Configuration, request: MeasureRequest, output_file: Path,
                    with_latency: bool, with_outputs: bool = True) -> Dict[str, Any]:
    threads = request.threads or default_threads()
    options = config.backend.validate_options(
        {k: v for k, v in request.options.items() if k in config.backend.option_defaults})
    spec = bundle.inputs[0] if bundle.inputs else None
    data = None
    if bundle.evaluation is not None:
        data = {"path": str(bundle.evaluation.path), "limit": request.eval_limit}
    prep = bundle.preprocessing
    calibration = CalibrationSet.from_bundle(bundle) if config.derived == "int8" else None
    return {
        "model": {"path": str(config.model.path), "format": config.model.format},
        "backend": config.backend.name,
        "precision": config.derived,
        "calibration": None if calibration is None else calibration.to_dict(),
        "threads": threads,
        "options": options,
        "inputs": {
            "batch": request.batch, "shapes": request.shapes, "files": request.inputs, "seed": request.seed,
            "names": [t.name for t in bundle.inputs],
            "data": data, "layout": spec.layout if spec else "ANY",
            "preprocessing": None if prep is None else {
                "scale": prep.scale, "mean": list(prep.mean), "std": list(prep.std),
                "channel_order": prep.channel_order},
        },
        "latency": {"warmup_count": request.warmup.count, "warmup_seconds": request.warmup.seconds,
                    "iterations": request.iterations, "min_seconds": request.min_seconds} if with_latency else None,
        "outputs": None if bundle.is_plain_file or not with_outputs else {
            "save": str(output_file), "generated_batches": FIDELITY_BATCHES},
        "trace": request.trace if with_latency else None,
        "memory_limit_mb": request.memory_limit_mb,
        "fault": request.fault,
    }


def measure_configuration(bundle: Bundle, config: Configuration, request: MeasureRequest, device: Dict[str, Any],
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
        report = Report(request.kind, device, model_section, {"name": config.backend.name,
                        "version": config.backend.status().version, "configuration": worker_request["options"]},
                        status="failed", error={"type": type(exc).__name__, "message": str(exc)})
        return report, None
    if bundle.is_plain_file and not config.derived:
        model_section["precision"] = result["precision"]
    for warning in (result.get("prepared") or {}).get("warnings", []):
        logging.getLogger("edge-agent").warning("%s: %s", config.label, warning)
    report = Report(request.kind, device, model_section, result["backend"], inputs=result["inputs"],
                    memory=result["memory"], thermal=result["thermal"])
    if "latency" in result:
        report.latency = dict(load_ms=result["load_ms"], first_ms=result["first_ms"], **result["latency"])
        report.latency_by_batch = result["by_batch"]
    if "trace" in result:
        report.profile = {"trace": result["trace"]}
    outputs = np.load(result["output_pass"]["file"]) if "output_pass" in result else None
    if outputs is not None and bundle.evaluation is not None and result["output_pass"]["from"] == "evaluation split":
        _, labels = bundle.evaluation.load(request.eval_limit)
        if labels is not None:
            report.accuracy = dict(accuracy.topk_accuracy(outputs, labels), split="evaluation")
    return report, outputs
