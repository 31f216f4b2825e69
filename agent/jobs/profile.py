"""The `profile` job: each model file's static profile, joined with what was measured on this board.

A measured profile is an ordinary measurement (`agent.jobs.measure.run_measure`, one worker per configuration, under its
time limit) whose workers also record the runtime's per-op trace; each report then gets a `profile`
section: the static profile of the file that ran, per-layer times joined onto its layers, the
roofline against this device's cached peaks (a layer or model measured faster than its bound has its
ceilings re-checked once, `agent.profile.ceilings`, before it is flagged), and, with `scaling`, the
latency at 1..N threads with Amdahl's law fitted. A static profile (`static_only`) runs nothing: one
report per model file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from agent.backends.registry import BACKENDS, get_backend
from agent.bundle import Bundle, ModelFile, open_model
from agent.cache import cache_file
from agent.device.detect import DeviceSection
from agent.device.peaks import Peaks, cached_entry, cached_peaks, store_peaks
from agent.device.sysfs import SysfsReader
from agent.errors import AgentError, UsageError, error_from
from agent.graph.onnx_state import FOLD_ELEMENTS
from agent.graph.read import read_graph
from agent.jobs.measure import run_measure
from agent.measure.inputs import input_value, load_npy
from agent.measure.isolate import ProgressHandler
from agent.measure.messages import TraceSettings
from agent.measure.plan import MeasureRequest, StartHandler, check_threads, default_threads
from agent.profile import ceilings
from agent.profile.measured import profile_section
from agent.profile.scaling import scaling_section, thread_counts
from agent.profile.static import static_profile
from agent.report import Report

PEAKS_CACHE = "peaks.json"


@dataclass
class ProfileRequest:
    """What to profile: the measurement settings, and whether to run at all or sweep thread counts."""

    measure: MeasureRequest
    static_only: bool = False
    scaling: bool = False
    scaling_threads: Optional[List[int]] = None


class SectionInputs(NamedTuple):
    """What a profile section is made of, but the peaks (which a re-check may raise)."""

    path: str
    shapes: Mapping[str, Sequence[int]]
    values: Mapping[str, Any]
    trace: Optional[Dict[str, Any]]
    latency: Optional[Dict[str, Any]]
    threads: int
    scaling: Optional[Dict[str, Any]]
    runtime: Optional[str]


def device_peaks(fingerprint: str, refresh: bool = False, measure: bool = True) -> Optional[Peaks]:
    """This device's peaks from the cache (`agent.cache`); measured and cached when missing or
    `refresh`, unless `measure` is False (then None when missing)."""
    path = cache_file(PEAKS_CACHE)
    if measure or refresh:
        return cached_peaks(fingerprint, path, lambda: ceilings.measure(fingerprint, SysfsReader("/")), refresh)
    return cached_entry(fingerprint, path)


def run_profile(request: ProfileRequest, device: DeviceSection, on_start: Optional[StartHandler] = None,
                on_progress: Optional[ProgressHandler] = None) -> List[Report]:
    """Profile every configuration (or, static only, every model file); failed ones are reports too."""
    if request.static_only:
        return static_reports(request.measure, device, device_peaks(device.fingerprint, measure=False))
    settings = request.measure
    counts = (request.scaling_threads or thread_counts(default_threads())) if request.scaling else []
    check_threads(settings, counts)  # before anything is measured
    traced = dataclasses.replace(settings, kind="profile",
                                 trace=TraceSettings(settings.iterations, settings.warmup.count))
    reports = run_measure(traced, device, on_start, on_progress)
    scaling: Dict[str, Dict[str, Any]] = {}
    if request.scaling:
        scaling = sweep(settings, device, counts, on_start, on_progress)
    try:
        peaks = device_peaks(device.fingerprint)
    except AgentError:  # the ceilings could not be measured: the profile goes without its roofline
        peaks = None
    bundle = open_model(settings.model, verify=False)
    inputs = [_section_inputs(report, bundle, settings, scaling) for report in reports]
    sections = [_section(*i, peaks) for i in inputs]
    over = ceilings.over_roof(sections)
    if peaks is not None and over:
        try:
            peaks = ceilings.recheck(peaks, over)
            store_peaks(peaks, cache_file(PEAKS_CACHE))
            sections = [_section(*i, peaks) for i in inputs]
        except AgentError:
            pass  # the re-check could not run: the rows stay flagged against the first figures
    for report, section in zip(reports, sections):
        report.profile = section
    return reports


def _section_inputs(report: Report, bundle: Bundle, settings: MeasureRequest,
                    scaling: Dict[str, Dict[str, Any]]) -> SectionInputs:
    """What `_section` needs for one measured report, all but the peaks."""
    trace = (report.profile or {}).get("trace") if report.status == "ok" else {
        "available": False, "runtime": report.backend["name"], "reason": "the measurement failed"}
    path = (trace or {}).get("model") or report.model["path"]
    shapes = {t["name"]: t["resolved_shape"] for t in report.inputs or []}
    if not shapes:  # the run failed before the worker resolved the inputs
        shapes = file_shapes(bundle, path, settings.shapes)
    return SectionInputs(path, shapes, _file_values(bundle, path, settings.inputs), trace, report.latency,
                         _threads(report, settings), scaling.get(report.label), report.backend.get("name"))


def static_reports(request: MeasureRequest, device: DeviceSection, peaks: Optional[Peaks]) -> List[Report]:
    """One report per model file of the bundle that `request` selects, with its static profile; its
    roofline takes the compute peaks of the first backend that runs the file's format."""
    bundle = open_model(request.model)
    formats = {f for name in request.backends or [] for f in get_backend(name).formats}
    models = [m for m in bundle.models if (not request.precisions or m.precision in request.precisions)
              and (not formats or m.format in formats)]
    if not models:
        raise UsageError(f"{bundle.name} has no model file that --backend/--precision select")
    threads = request.threads or default_threads()
    reports = []
    for model in models:
        shapes = file_shapes(bundle, str(model.path), request.shapes)
        values = _file_values(bundle, str(model.path), request.inputs)
        runtime = next((b.name for b in BACKENDS.values() if model.format in b.formats
                        and (not request.backends or b.name in request.backends)), None)
        section = _section(str(model.path), shapes, values, None, None, threads, None, runtime, peaks)
        reports.append(Report("profile", device, _model_section(bundle, model),
                              {"name": None, "version": None, "configuration": None}, profile=section))
    return reports


def sweep(request: MeasureRequest, device: DeviceSection, counts: Sequence[int],
          on_start: Optional[StartHandler] = None,
          on_progress: Optional[ProgressHandler] = None) -> Dict[str, Dict[str, Any]]:
    """Every configuration at each thread count, as `bench --threads N` measures it; one
    `scaling_section` per configuration label. Accuracy is judged on one sample only: latency matters here."""
    by_label: Dict[str, List[Optional[float]]] = {}
    for position, count in enumerate(counts):
        run_request = dataclasses.replace(request, kind="bench", threads=count, trace=None, eval_limit=1)
        for report in run_measure(run_request, device, on_start, on_progress):
            p50 = report.latency.get("p50_ms") if report.status == "ok" and report.latency else None
            by_label.setdefault(report.label, [None] * len(counts))[position] = p50
    return {label: scaling_section(list(counts), times) for label, times in by_label.items()}


def _section(path: str, shapes: Mapping[str, Sequence[int]], values: Mapping[str, Any],
             trace: Optional[Dict[str, Any]], latency: Optional[Dict[str, Any]], threads: int,
             scaling: Optional[Dict[str, Any]], runtime: Optional[str], peaks: Optional[Peaks]) -> Dict[str, Any]:
    """The profile section, or `{"error": ...}` naming why this file could not be profiled; `runtime`
    (the backend that ran, None for a static profile) chooses the compute ceilings. An input that
    chooses an If's branch and was fed generated data in the measurement is named in the warnings."""
    try:
        profile = static_profile(path, shapes, values)
    except AgentError as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    if trace is not None:
        for entry in profile.graph.control_flow:
            for name in entry.inputs:
                profile.graph.warnings.append(
                    f"input {name} chooses the branch of {entry.layer}, and the measurement fed it generated "
                    f"data (seeded integers 0..9): give --input {name}=VALUE")
    return profile_section(profile, trace, latency, peaks, threads, scaling, runtime)


def _file_names(bundle: Bundle, path: str, names: Sequence[str]) -> Dict[str, str]:
    """The file's own name of each input name given: a bundle's manifest may name its inputs differently
    from the file; such names are matched by position, as the worker does."""
    if not names:
        return {}
    try:
        own = read_graph(path).inputs
    except AgentError:
        return {name: name for name in names}  # the profile will name the problem
    aliases = dict(zip((t.name for t in bundle.inputs), own))
    return {name: aliases.get(name, name) for name in names}


def file_shapes(bundle: Bundle, path: str, shapes: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
    """`--shape` values keyed by the file's own input names."""
    names = _file_names(bundle, path, list(shapes))
    return {names[name]: list(dims) for name, dims in shapes.items()}


def _file_values(bundle: Bundle, path: str, given: Mapping[str, str]) -> Dict[str, Any]:
    """The values `--input` gives (numbers, and `.npy` arrays small enough to fold), keyed by the file's
    own input names; the static profile folds the control flow they steer."""
    names = _file_names(bundle, path, list(given))
    values: Dict[str, Any] = {}
    for name, text in given.items():
        number = input_value(text)
        array = np.asarray(number) if number is not None else load_npy(name, text)
        if array.size <= FOLD_ELEMENTS:
            values[names[name]] = array
    return values


def _model_section(bundle: Bundle, model: ModelFile) -> Dict[str, Any]:
    return {"name": bundle.name, "path": str(model.path), "sha256": model.sha256, "bytes": model.size_bytes,
            "format": model.format, "precision": model.precision,
            "bundle": None if bundle.is_plain_file else str(bundle.root)}


def _threads(report: Report, request: MeasureRequest) -> int:
    config = report.backend.get("configuration") or {}
    return int(config.get("threads") or config.get("intra_op_threads") or request.threads or default_threads())


def profile_failures(reports: Sequence[Report]) -> List[AgentError]:
    """The errors among the reports (a failed measurement, or a file that could not be profiled), each
    named after its configuration."""
    found = []
    for report in reports:
        error = report.error if report.status != "ok" else (report.profile or {}).get("error")
        if error:
            label = f"{report.backend.get('name') or 'static'}/{report.model.get('precision')}"
            found.append(error_from(error["type"], f"{label} ({report.model.get('format')}): {error['message']}"))
    return found
