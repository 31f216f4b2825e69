"""The `compare` job: a compressed model against its baseline, the way compression papers report it.

Both models are measured by `run` exactly as `edge-agent bench` measures them (same backends,
precisions, threads, inputs); each configuration's model file gets a static profile. Configurations
are paired by backend/precision label, else by backend. Per pair: parameters and their bytes, the
parameter compression ratio (baseline / candidate), MACs, FLOPs and MULTs with their reduction
(1 − candidate / baseline), measured p50 latency and the speed-up (baseline / candidate, ×), and
Top-1/Top-5 with their delta (candidate − baseline) when the bundles carry labelled data. The table prints
parameters and their bytes to two significant figures (the JSON keeps exact counts), the bytes with the
dtypes they are stored in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent import __version__
from agent.bundle import open_model
from agent.device.detect import DeviceSection
from agent.errors import AgentError, UsageError, error_from
from agent.graph.read import read_graph
from agent.jobs.measure import run_measure
from agent.measure.isolate import ProgressHandler
from agent.measure.plan import MeasureRequest, StartHandler
from agent.profile.render import count, number, significant
from agent.profile.static import static_profile
from agent.report import Report, percent, utc_now

COMPARE_SCHEMA = "edge-agent/compare/1"
STATIC = ("params", "param_bytes", "macs", "flops", "mults")


def side(report: Report) -> Dict[str, Any]:
    """One configuration's figures: the static totals of the file it ran, p50, Top-1/Top-5."""
    build = (report.backend.get("configuration") or {}).get("build") or {}
    path = build.get("file") or report.model["path"]
    figures: Dict[str, Any] = {"label": report.label, "model": report.model.get("name"), "path": path,
                               "format": report.model.get("format"), "precision": report.model.get("precision"),
                               "status": report.status, "error": report.error}
    try:
        shapes = {t["name"]: t["resolved_shape"] for t in report.inputs or []}
        profile = static_profile(path, shapes)
        totals = profile.totals()
        figures.update({key: totals[key] for key in STATIC}, param_dtypes=sorted(profile.constants()[0]))
    except AgentError as exc:
        figures.update({key: None for key in STATIC}, param_dtypes=None, error=figures["error"] or {
            "type": type(exc).__name__, "message": str(exc)})
    figures["p50_ms"] = report.latency.get("p50_ms") if report.latency else None
    figures.update(top1=(report.accuracy or {}).get("top1"), top5=(report.accuracy or {}).get("top5"))
    return figures


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return round(numerator / denominator, 4) if numerator is not None and denominator else None


def _reduction(base: Optional[float], candidate: Optional[float]) -> Optional[float]:
    return round(1 - candidate / base, 4) if base and candidate is not None else None


def _delta(base: Optional[float], candidate: Optional[float]) -> Optional[float]:
    return round(candidate - base, 4) if base is not None and candidate is not None else None


def change(base: Dict[str, Any], candidate: Dict[str, Any]) -> Dict[str, Any]:
    """The columns compression papers print: ratios (×), reductions (fractions), deltas (fractions)."""
    return {"param_compression": _ratio(base["params"], candidate["params"]),
            "param_bytes_compression": _ratio(base["param_bytes"], candidate["param_bytes"]),
            "macs_reduction": _reduction(base["macs"], candidate["macs"]),
            "flops_reduction": _reduction(base["flops"], candidate["flops"]),
            "mults_reduction": _reduction(base["mults"], candidate["mults"]),
            "speedup": _ratio(base["p50_ms"], candidate["p50_ms"]),
            "top1_delta": _delta(base["top1"], candidate["top1"]),
            "top5_delta": _delta(base["top5"], candidate["top5"])}


def pair(baseline: Sequence[Report], candidate: Sequence[Report]) -> Tuple[List[Tuple[Report, Report]], List[Report]]:
    """Pairs by label (backend/precision), then by backend; and the reports left without a partner."""
    free = list(candidate)
    pairs, alone = [], []
    for report in baseline:
        match = next((c for c in free if c.label == report.label), None) or \
            next((c for c in free if c.backend["name"] == report.backend["name"]), None)
        if match is None:
            alone.append(report)
            continue
        free.remove(match)
        pairs.append((report, match))
    return pairs, alone + free


Dims = Optional[Tuple[Optional[int], ...]]


def signature(model: str, prefer: str = "onnx") -> Tuple[List[Dims], List[Dims]]:
    """A model's inputs' and outputs' shapes past the batch dimension (None where a dimension or a whole
    shape is not fixed), read from its `prefer` format's file where the bundle has one."""
    bundle = open_model(model, verify=False)
    chosen = next((m for m in bundle.models if m.format == prefer), bundle.models[0])
    graph = read_graph(chosen.path)

    def dims(name: str) -> Dims:
        tensor = graph.tensor(name)
        if tensor is None or tensor.shape is None:
            return None
        return tuple(d if isinstance(d, int) and d > 0 else None for d in tensor.shape[1:])
    return [dims(name) for name in graph.inputs], [dims(name) for name in graph.outputs]


def _compatible(one: List[Dims], other: List[Dims]) -> bool:
    return len(one) == len(other) and all(
        a is None or b is None or (len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b)))
        for a, b in zip(one, other))


def check_comparable(baseline: str, candidate: str) -> None:
    """A `UsageError` when the two models do not take and give the same tensors (past the batch size):
    a compressed model replaces its baseline, and timing two unrelated networks says nothing."""
    formats = {m.format for m in open_model(baseline, verify=False).models} & \
        {m.format for m in open_model(candidate, verify=False).models}
    prefer = "onnx" if "onnx" in formats or not formats else sorted(formats)[0]
    base, other = signature(baseline, prefer), signature(candidate, prefer)
    if not (_compatible(base[0], other[0]) and _compatible(base[1], other[1])):
        raise UsageError(f"the candidate does not take and give the same tensors as the baseline (inputs "
                         f"{base[0]} -> outputs {base[1]} vs {other[0]} -> {other[1]}, past the batch size): "
                         "--force to compare them anyway")


def run_compare(request: MeasureRequest, candidate_model: str, device: DeviceSection,
                on_start: Optional[StartHandler] = None, on_progress: Optional[ProgressHandler] = None,
                force: bool = False) -> Dict[str, Any]:
    """Measure `request.model` (the baseline) and `candidate_model` alike; the comparison document. Models
    whose tensors differ are refused first, unless `force`."""
    if not force:
        check_comparable(request.model, candidate_model)
    settings = dataclasses.replace(request, kind="bench", trace=None)
    baseline = run_measure(settings, device, on_start, on_progress)
    candidate = run_measure(dataclasses.replace(settings, model=candidate_model), device, on_start, on_progress)
    pairs, alone = pair(baseline, candidate)
    rows = []
    for base_report, candidate_report in pairs:
        base, other = side(base_report), side(candidate_report)
        rows.append({"backend": base_report.backend["name"], "baseline": base, "candidate": other,
                     "change": change(base, other)})
    return {"schema": COMPARE_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
            "device": device.to_dict(), "baseline": {"model": request.model}, "candidate": {"model": candidate_model},
            "pairs": rows,
            "unpaired": [{"label": r.label, "model": r.model.get("path"), "status": r.status} for r in alone]}


def first_error(document: Dict[str, Any]) -> Optional[AgentError]:
    """The error of the first configuration that failed, as its `AgentError` class."""
    for row in document["pairs"]:
        for role in ("baseline", "candidate"):
            error = row[role]["error"]
            if error:
                return error_from(error["type"], f"{role} {row[role]['label']}: {error['message']}")
    return None


def _points(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:+.1f}pt"


def _times(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _change(reduction: Optional[float]) -> str:
    return "-" if reduction is None else f"{-100 * reduction + 0.0:+.1f}%"


def _stored(figures: Dict[str, Any]) -> str:
    """Parameter bytes at their stored precision, to two significant figures: `380KB fp32`."""
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    dtypes = "+".join(names.get(d, d) for d in figures.get("param_dtypes") or [])
    return f"{significant(figures['param_bytes'], 'B')} {dtypes}".rstrip()


def render_compare(document: Dict[str, Any]) -> str:
    """One table, the way compression papers print it: per pair, a baseline row, a candidate row and a change
    row. Parameters and their bytes (at the stored precision) to two significant figures."""
    header = ["configuration", "model", "params", "param bytes", "MACs", "FLOPs", "MULTs", "p50 ms", "top-1", "top-5"]
    cells = [header]
    for row in document["pairs"]:
        for role in ("baseline", "candidate"):
            figures = row[role]
            own = figures["label"] if role == "baseline" or figures["label"] != row["baseline"]["label"] else ""
            cells.append([own, role, significant(figures["params"]), _stored(figures), count(figures["macs"]),
                          count(figures["flops"]), count(figures["mults"]), number(figures["p50_ms"]),
                          percent(figures["top1"]), percent(figures["top5"])])
        delta = row["change"]
        cells.append(["", "change", _times(delta["param_compression"]), _times(delta["param_bytes_compression"]),
                      _change(delta["macs_reduction"]), _change(delta["flops_reduction"]),
                      _change(delta["mults_reduction"]),
                      _times(delta["speedup"]), _points(delta["top1_delta"]), _points(delta["top5_delta"])])
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [f"compare: {document['baseline']['model']} (baseline) vs {document['candidate']['model']} (candidate)",
             f"device: {document['device'].get('summary', '-')}",
             "change: params and bytes as compression ratios (baseline / candidate), work as the change in %, "
             "p50 as speed-up, accuracy in points"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines += [f"not paired: {entry['label']} ({entry['model']})" for entry in document["unpaired"]]
    for row in document["pairs"]:
        for role in ("baseline", "candidate"):
            if row[role]["error"]:
                lines.append(f"FAILED {role} {row[role]['label']}: {row[role]['error']['message']}")
    return "\n".join(lines)
