"""The `bench` and `eval` jobs: every configuration asked for, each in its own worker, judged together.

A configuration is one model file of the bundle run by one backend (agent.measure.plan). Each is
measured in its own worker process (agent.measure.run); this job then judges the outputs: Top-1/Top-5
against the evaluation labels (in the run), and fidelity against the FP32 reference run (ONNX Runtime on
the ONNX FP32 file where it can run, else the first FP32 file a backend here can run). A configuration
that fails becomes a failed report; the others still run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from agent.backends.registry import BACKENDS
from agent.bundle import Bundle, open_model
from agent.device.detect import DeviceSection
from agent.errors import AgentError, UsageError
from agent.measure import accuracy
from agent.measure.isolate import ProgressHandler
from agent.measure.plan import Configuration, MeasureRequest, StartHandler, plan
from agent.measure.run import build_request, measure_configuration, run_worker
from agent.report import Report


def run_measure(request: MeasureRequest, device: DeviceSection, on_start: Optional[StartHandler] = None,
        on_progress: Optional[ProgressHandler] = None) -> List[Report]:
    """Measure every configuration of `request` and return one report each, failed ones included."""
    bundle = open_model(request.model)
    if request.kind == "eval" and bundle.is_plain_file:
        raise UsageError(f"{request.model} is a plain model file: eval needs a bundle with evaluation data or an "
                         "FP32 twin to compare with (docs/bundle.md)")
    configs = plan(bundle, request)
    for name in request.options:
        if not any(name in c.backend.option_defaults for c in configs):
            raise UsageError(f"no backend being run has an option {name!r}")
    reference = _reference(bundle, configs)
    with tempfile.TemporaryDirectory(prefix="edge-agent-") as workdir:
        reports: List[Report] = []
        outputs: List[Optional[np.ndarray]] = []
        for index, config in enumerate(configs):
            if on_start:
                on_start(index + 1, len(configs), config.label)
            report, output = measure_configuration(bundle, config, request, device, Path(workdir) / f"{index}.npy",
                                                   on_progress)
            reports.append(report)
            outputs.append(output)
        if reference is None:
            return reports
        if reference in configs:
            ref_outputs = outputs[configs.index(reference)]
        else:
            ref_outputs = _reference_outputs(bundle, reference, request, Path(workdir) / "ref.npy", on_progress)
    for report, config, output in zip(reports, configs, outputs):
        if config != reference and output is not None:
            report.fidelity = _fidelity(reference, ref_outputs, output)
    return reports


def _reference(bundle: Bundle, configs: List[Configuration]) -> Optional[Configuration]:
    """The FP32 run fidelity is judged against: ONNX first (the portable reference), else TFLite, with the
    first backend here that reads it; None for plain files and bundles without a runnable FP32 file."""
    if bundle.is_plain_file:
        return None
    available = [b for b in BACKENDS.values() if b.status().available]
    for fmt in ("onnx", "tflite"):
        model = next((m for m in bundle.models if m.precision == "fp32" and m.format == fmt), None)
        backend = next((b for b in available if fmt in b.formats), None)
        if model is not None and backend is not None:
            return next((c for c in configs if c.model == model and c.backend is backend and not c.derived),
                        Configuration(model, backend))
    return None


def _reference_outputs(bundle: Bundle, reference: Configuration, request: MeasureRequest, output_file: Path,
                       on_progress: Optional[ProgressHandler]) -> Optional[np.ndarray]:
    """Run the FP32 reference for its outputs only, when it was not among the configurations measured."""
    try:
        run_worker(build_request(bundle, reference, request, output_file, with_latency=False), request.time_limit_s,
                   on_progress, request.should_cancel)
    except AgentError:
        return None
    return np.load(output_file)


def _fidelity(reference: Configuration, ref_outputs: Optional[np.ndarray],
              candidate: np.ndarray) -> Dict[str, Any]:
    name = f"{reference.label} ({reference.model.format})"
    if ref_outputs is None:
        return {"reference": name, "error": "the FP32 reference run failed"}
    return dict(accuracy.fidelity(ref_outputs, candidate), reference=name)
