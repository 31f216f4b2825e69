"""The jobs the CLI (and later the daemon) run: `bench` and `eval` over every configuration asked for.

A configuration is one model file of the bundle run by one backend. Each is measured in its own
worker process; the parent then judges the outputs: Top-1/Top-5 against the evaluation labels, and
fidelity against the FP32 reference run (ONNX Runtime on the ONNX FP32 file where it can run, else
the first FP32 file a backend here can run). A configuration that fails becomes a failed report;
the others still run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agent import __version__
from agent.backends.base import Backend
from agent.backends.build import CalibrationSet
from agent.backends.registry import BACKENDS, get_backend
from agent.bundle import Bundle, ModelFile, open_model
from agent.errors import AgentError, BackendUnavailableError, UsageError
from agent.measure import accuracy
from agent.measure.isolate import ProgressHandler, run_worker
from agent.measure.latency import Warmup
from agent.report import Report

# Seeded batches for fidelity when a bundle has no evaluation samples.
FIDELITY_BATCHES = 8


@dataclass
class MeasureRequest:
    """What to measure and how: the `bench`/`eval` command line, as data."""

    model: str
    kind: str = "bench"
    backends: Optional[List[str]] = None
    precisions: Optional[List[str]] = None
    threads: Optional[int] = None
    options: Dict[str, str] = field(default_factory=dict)
    warmup: Warmup = Warmup()
    iterations: int = 100
    min_seconds: float = 1.0
    batch: List[int] = field(default_factory=lambda: [1])
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    inputs: Dict[str, str] = field(default_factory=dict)
    eval_limit: Optional[int] = None
    time_limit_s: float = 300.0
    seed: int = 0
    # {"runs": N, "warmup": N}: also record the runtime's per-op trace (`edge-agent profile`).
    trace: Optional[Dict[str, int]] = None
    # Also run the precisions backends make on the device (ONNX Runtime INT8/FP16, TensorRT FP16/INT8
    # engines) from the bundle's FP32 file, where the bundle does not ship that precision itself.
    derive: bool = False
    # The daemon's: each worker's address-space limit (RLIMIT_AS), a poll that stops the running worker
    # when it returns True (`cancel`), and the test suite's fault injection (worker.TEST_FAULTS_ENV).
    memory_limit_mb: Optional[int] = None
    should_cancel: Optional[Callable[[], bool]] = field(default=None, repr=False, compare=False)
    fault: Optional[str] = None

    @property
    def measures_latency(self) -> bool:
        return self.kind in ("bench", "profile")


@dataclass
class Configuration:
    """One model file with one backend; `derived` names a precision the backend makes from the file."""

    model: ModelFile
    backend: Backend
    derived: Optional[str] = None

    @property
    def precision(self) -> str:
        """The precision that runs: the derived one, else the file's."""
        return self.derived or self.model.precision

    @property
    def label(self) -> str:
        return f"{self.backend.name}/{self.precision}"


StartHandler = Callable[[int, int, str], None]


def default_threads() -> int:
    """Every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan(bundle: Bundle, request: MeasureRequest) -> List[Configuration]:
    """Every (model file, backend) pair the request and this board allow, or an error saying why none."""
    names = request.backends or list(BACKENDS)
    backends = [get_backend(name) for name in names]
    statuses = {b.name: b.status() for b in backends}
    if request.backends:
        for backend in backends:
            if not statuses[backend.name].available:
                raise BackendUnavailableError(f"backend {backend.name} is unavailable: "
                                              f"{statuses[backend.name].reason}")
    models = [m for m in bundle.models if not request.precisions or m.precision in request.precisions]
    usable = [b for b in backends if statuses[b.name].available]
    found = derivations(bundle, usable, request.precisions) if request.derive else []
    derived = [c for c, reason in found if reason is None]
    if not models and not derived:
        offered = ", ".join(sorted({m.precision for m in bundle.models}))
        why = sorted({reason for _, reason in found if reason}) or \
            ([] if request.derive else ["--derive makes more on the device"])
        raise UsageError(f"{bundle.name} has no model in precision {', '.join(request.precisions or [])} "
                         f"(it offers {offered}{''.join('; ' + w for w in why)})")
    configs = [Configuration(m, b) for m in models for b in usable if m.format in b.formats] + derived
    if not configs:
        formats = ", ".join(sorted({m.format for m in models}))
        reasons = "; ".join([f"{b.name}: {statuses[b.name].reason or 'does not read ' + formats}" for b in backends]
                            + sorted({f"{c.label}: {reason}" for c, reason in found if reason}))
        raise BackendUnavailableError(f"no backend here can run {bundle.name} ({formats}): {reasons}")
    return configs


def derivations(bundle: Bundle, backends: List[Backend],
                precisions: Optional[List[str]] = None) -> List[Tuple[Configuration, Optional[str]]]:
    """Every precision a backend here could make from a bundle file, with the reason it is skipped (None:
    it can be made). The bundle's own files win: nothing is derived that the bundle ships."""
    shipped = {(m.format, m.precision) for m in bundle.models}
    found: List[Tuple[Configuration, Optional[str]]] = []
    for model in bundle.models:
        for backend in backends:
            for precision in backend.derived_precisions(model) if model.format in backend.formats else ():
                if (model.format, precision) in shipped or (precisions and precision not in precisions):
                    continue
                reason = None
                if precision == "int8" and bundle.calibration is None:
                    reason = ("INT8 skipped: " + ("a plain model file has no calibration data" if bundle.is_plain_file
                              else "the bundle has no calibration data (data.calibration in manifest.json)"))
                found.append((Configuration(model, backend, precision), reason))
    return found


def run(request: MeasureRequest, device: Dict[str, Any], on_start: Optional[StartHandler] = None,
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


def _worker_request(bundle: Bundle, config: Configuration, request: MeasureRequest, output_file: Path,
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
    worker_request = _worker_request(bundle, config, request, output_file, request.measures_latency, with_outputs)
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


def _reference_outputs(bundle: Bundle, reference: Configuration, request: MeasureRequest, output_file: Path,
                       on_progress: Optional[ProgressHandler]) -> Optional[np.ndarray]:
    """Run the FP32 reference for its outputs only, when it was not among the configurations measured."""
    worker_request = _worker_request(bundle, reference, request, output_file, with_latency=False)
    try:
        run_worker(worker_request, request.time_limit_s, on_progress, request.should_cancel)
    except AgentError:
        return None
    return np.load(output_file)


def _fidelity(reference: Configuration, ref_outputs: Optional[np.ndarray],
              candidate: np.ndarray) -> Dict[str, Any]:
    name = f"{reference.label} ({reference.model.format})"
    if ref_outputs is None:
        return {"reference": name, "error": "the FP32 reference run failed"}
    return dict(accuracy.fidelity(ref_outputs, candidate), reference=name)


INFO_SCHEMA = "edge-agent/info/1"


def device_section(root: str = "/") -> Dict[str, Any]:
    """The board as reports carry it: everything detected, plus its fingerprint."""
    from agent.device.detect import detect_device, device_fingerprint
    from agent.device.sysfs import SysfsReader

    device = detect_device(SysfsReader(root))
    return dict(device.to_dict(), fingerprint=device_fingerprint(device))


def info(root: str = "/") -> Dict[str, Any]:
    """`edge-agent info`: the board, and every runtime with its version or why it cannot run here.

    Runtimes are probed in this process, so they describe this machine: for a captured tree (`root`
    other than `/`) they are left out."""
    from agent.backends.registry import runtime_statuses
    from agent.report import utc_now

    live = os.path.realpath(root) == "/"
    return {
        "schema": INFO_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
        "device": device_section(root),
        "runtimes": [s.to_dict() for s in runtime_statuses()] if live else None,
    }


def render_info(report: Dict[str, Any]) -> str:
    """`info` as readable lines: the board's fields, then one line per runtime."""
    lines = [f"device: {report['device'].get('summary') or '-'}"]
    lines += [f"  {key}: {value}" for key, value in _flatten(report["device"]) if key != "summary"]
    if report["runtimes"] is None:
        lines.append("runtimes: not probed (the board was read from a captured tree)")
        return "\n".join(lines)
    lines.append("runtimes:")
    for runtime in report["runtimes"]:
        state = (runtime["version"] or "available") if runtime["available"] else f"unavailable: {runtime['reason']}"
        lines.append(f"  {runtime['name']}: {state}")
    return "\n".join(lines)


def _flatten(data: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    items: List[Tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, name + ".")
        elif value not in (None, [], {}):
            items.append((name, ", ".join(map(str, value)) if isinstance(value, list) else value))
    return items
