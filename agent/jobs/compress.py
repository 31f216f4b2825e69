"""The `compress` job: a smaller model written beside the original, as a bundle with the same data.

`lowrank` factorises layers (agent/compress: candidates, rank rule, rewrite) and reports, per layer, the
ranks, kept energy and reconstruction error, with the parameters and MACs before and after as the static
profiler counts them in the two files (docs/profile.md). A bundle gives a bundle (its calibration and
evaluation data and labels copied, the FP32 ONNX file replaced; TFLite twins are not carried over); a
plain `.onnx` file gives a plain `.onnx` file.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent import __version__
from agent.bundle import MANIFEST, Bundle, ModelFile, open_model, write_bundle
from agent.compress.edit import OnnxModel
from agent.compress.lowrank import Candidate, Skipped, candidates
from agent.compress.ranks import Decision, RankRule, choose
from agent.compress.rewrite import SUFFIX, LayerResult, apply
from agent.compress.subset import cut, find_classifier, pick_classes
from agent.errors import CompressError, UsageError
from agent.graph.read import read_graph
from agent.jobs.profile import file_shapes
from agent.profile.render import count, short
from agent.profile.static import Profile, profile_graph, static_profile
from agent.report import utc_now

COMPRESS_SCHEMA = "edge-agent/compress/1"
TOTALS = ("params", "param_bytes", "macs", "flops", "mults")
MODEL_FILE = "model.fp32.onnx"


@dataclass
class LowRankRequest:
    """`edge-agent compress lowrank` as data."""

    model: str
    rule: RankRule
    output: Optional[str] = None
    conv: str = "tucker2"
    layers: Optional[List[str]] = None
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    force: bool = False


@dataclass
class Source:
    """The model being compressed: its bundle, its FP32 ONNX file, that file's graph profile and totals."""

    bundle: Bundle
    file: ModelFile
    profile: Profile
    shapes: Dict[str, List[int]] = field(default_factory=dict)  # `--shape`, by the file's own input names

    def profile_of(self, written: Path) -> Profile:
        """The static profile of a file written from this one, at the same input shapes."""
        return static_profile(written, self.shapes)

    @property
    def totals(self) -> Dict[str, Any]:
        """The static totals of the file (parameters, bytes, MACs, FLOPs, MULTs)."""
        return {key: self.profile.totals()[key] for key in TOTALS}


def open_source(model: str, shapes: Dict[str, List[int]]) -> Source:
    """The bundle (or plain file) `model` and the static profile of its FP32 ONNX file."""
    bundle = open_model(model)
    chosen = next((m for m in bundle.models if m.format == "onnx" and m.precision == "fp32"), None)
    if chosen is None:
        raise UsageError(f"{model} has no FP32 ONNX file: compress works on ONNX models")
    own = file_shapes(bundle, str(chosen.path), shapes)
    return Source(bundle, chosen, profile_graph(read_graph(chosen.path, own)), own)


def target_path(source: Source, output: Optional[str], suffix: str, force: bool, folder: bool = False) -> Path:
    """Where the compressed model goes: `output`, else beside the model with `-<suffix>` (a `.onnx` file for a
    plain file unless `folder`); refused when it exists, unless `force` (then it is replaced)."""
    plain = source.bundle.is_plain_file
    default = (source.file.path.with_name(f"{source.file.path.stem}-{suffix}" + ("" if folder else ".onnx"))
               if plain else source.bundle.root.with_name(f"{source.bundle.root.name}-{suffix}"))
    target = Path(output) if output else default
    if target.resolve() in (source.bundle.root.resolve(), source.file.path.resolve()):
        raise UsageError(f"{target} is the model itself: give another --output")
    if target.exists():
        if not force:
            raise UsageError(f"{target} exists: --force to replace it")
        if target.is_dir() and any((target / name).is_file() for name in (MANIFEST, "sweep.json")):
            shutil.rmtree(target)
        elif target.is_file() and target.suffix == ".onnx":
            target.unlink()
        else:
            raise UsageError(f"{target} exists and is not a model bundle, sweep folder or .onnx file: "
                             "--force replaces only those")
    return target


def write_model(source: Source, model: OnnxModel, target: Path, name: str, notes: str,
                labels: Optional[List[str]] = None, splits: Optional[Dict[str, Any]] = None) -> Path:
    """Save `model` at `target` (a plain file) or as `target`'s bundle; returns the ONNX file's path."""
    if source.bundle.is_plain_file:
        return model.save(target)
    target.mkdir(parents=True)
    path = model.save(target / MODEL_FILE)
    write_bundle(source.bundle, target, name, path,
                 {"generator": f"edge-agent {__version__} compress", "source": str(source.bundle.root),
                  "notes": notes}, labels=labels, splits=splits)
    return path


def analyse(request: LowRankRequest) -> Tuple[Source, List[Candidate], List[Skipped]]:
    """The source and its candidate layers; a `CompressError` when there is none."""
    source = open_source(request.model, request.shapes)
    found, skipped = candidates(OnnxModel(source.file.path), source.profile.graph, request.conv, request.layers)
    if not found:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:5]) or "it has no Conv, Gemm or MatMul layer"
        raise CompressError(f"{request.model}: no layer can be factorised ({reasons})")
    return source, found, skipped


def factorise(source: Source, decisions: List[Decision], target: Path, notes: str) -> Tuple[Path, List[LayerResult]]:
    """Write the model with `decisions` applied at `target`; the file and each candidate's result."""
    model = OnnxModel(source.file.path)
    results = apply(model, decisions)
    return write_model(source, model, target, f"{source.bundle.name}-lowrank", notes), results


def lowrank_document(request: LowRankRequest, source: Source, skipped: List[Skipped], results: List[LayerResult],
                     energy: Optional[float], written: Optional[Path]) -> Dict[str, Any]:
    """The report of one factorisation: per layer before/after (counted by the profiler in both files), totals."""
    after = source.profile_of(written) if written else source.profile
    before_layers = {c.name: c for c in source.profile.layers}
    grouped: Dict[str, List[Any]] = {}
    for cost in after.layers:
        grouped.setdefault(cost.name.split(SUFFIX)[0], []).append(cost)
    layers = []
    for result in results:
        old, new = before_layers[result.name], grouped.get(result.name, [])
        layers.append(dict(dataclasses.asdict(result), status="factorised" if result.ranks else "kept",
                           params_before=old.params, params_after=sum(c.params for c in new),
                           macs_before=old.macs, macs_after=sum(c.macs or 0 for c in new)))
    before, totals = source.totals, {key: after.totals()[key] for key in TOTALS}
    return {"schema": COMPRESS_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
            "method": "lowrank", "model": request.model, "source_file": str(source.file.path),
            "output": str(written.parent if written and not source.bundle.is_plain_file else written),
            "file": str(written) if written else None,
            "settings": {**dataclasses.asdict(request.rule), "conv": request.conv, "layers": request.layers},
            "energy": energy, "layers": layers, "skipped": [dataclasses.asdict(s) for s in skipped],
            "totals": {"before": before, "after": totals,
                       "param_compression": round(before["params"] / totals["params"], 4),
                       "macs_ratio": round(totals["macs"] / before["macs"], 4) if before["macs"] else None}}


def run_lowrank(request: LowRankRequest) -> Dict[str, Any]:
    """Factorise `request.model` under its rule and write the result; a `CompressError` when no layer gets
    cheaper."""
    source, found, skipped = analyse(request)
    totals = source.totals
    decisions, energy = choose(found, request.rule, totals["macs"], totals["params"])
    if not any(d.ranks for d in decisions):
        raise CompressError(f"{request.model}: no layer gets cheaper under this rule ("
                            + "; ".join(f"{d.candidate.name}: {d.reason}" for d in decisions[:3]) + ")")
    target = target_path(source, request.output, "lowrank", request.force)
    written, results = factorise(source, decisions, target, _notes(request, energy))
    return lowrank_document(request, source, skipped, results, energy, written)


@dataclass
class SubsetRequest:
    """`edge-agent compress subset` as data: `classes` as given (labels or indices)."""

    model: str
    classes: List[str]
    output: Optional[str] = None
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    force: bool = False


def run_subset(request: SubsetRequest) -> Dict[str, Any]:
    """Cut the classifier of `request.model` to `request.classes`; its labels and data splits follow."""
    source = open_source(request.model, request.shapes)
    model = OnnxModel(source.file.path)
    classifier = find_classifier(model)
    keep = pick_classes(request.classes, source.bundle.labels, classifier.classes)
    labels = source.bundle.labels or [str(i) for i in range(classifier.classes)]
    cut(model, classifier, keep)
    position = np.full(classifier.classes, -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    splits = {}
    for role in ("calibration", "evaluation"):
        split = getattr(source.bundle, role)
        if split is not None:
            x, y = split.load()
            if y is not None:  # the samples of the kept classes, labelled by their new class index
                chosen = position[y] >= 0
                x, y = x[chosen], position[y[chosen]]
            splits[role] = (x, y)
    target = target_path(source, request.output, "subset", request.force)
    written = write_model(source, model, target, f"{source.bundle.name}-subset",
                          f"classes {keep} of {request.model}, in that order",
                          labels=[labels[i] for i in keep], splits=splits)
    after = source.profile_of(written)
    return {"schema": COMPRESS_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
            "method": "subset", "model": request.model, "source_file": str(source.file.path),
            "output": str(target), "file": str(written),
            "classifier": classifier.node.name or classifier.node.output[0],
            "classes": [{"index": i, "label": labels[i]} for i in keep],
            "samples": {role: len(x) for role, (x, _) in splits.items()},
            "totals": {"before": source.totals, "after": {key: after.totals()[key] for key in TOTALS}}}


def _notes(request: LowRankRequest, energy: Optional[float]) -> str:
    rule = {k: v for k, v in dataclasses.asdict(request.rule).items() if v is not None}
    return (f"low-rank factorisation of {request.model} ({request.conv} for k x k convolutions), rule {rule}"
            + (f", kept energy {energy:.4g} per layer" if energy is not None else ""))


def _ranks(ranks: Optional[Sequence[int]]) -> str:
    return "x".join(str(r) for r in ranks) if ranks else "-"


def _fraction(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_lowrank(document: Dict[str, Any]) -> str:
    """The per-layer table, the skipped layers and the totals."""
    header = ["layer", "op", "form", "weight", "ranks", "full", "kept energy", "rel. error", "params",
              "MACs", "note"]
    cells = [header]
    for row in document["layers"]:
        cells.append([short(row["name"]), row["op"], row["form"], "x".join(map(str, row["weight_shape"])),
                      _ranks(row["ranks"]), str(row["full_rank"]), _fraction(row["kept_energy"]),
                      _fraction(row["relative_error"]),
                      f"{count(row['params_before'])} -> {count(row['params_after'])}",
                      f"{count(row['macs_before'])} -> {count(row['macs_after'])}", row["reason"] or ""])
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    totals = document["totals"]
    energy = document["energy"]
    lines = [f"compress lowrank: {document['model']} -> {document['output']}"
             + (f" (kept energy {energy:.4g} per layer)" if energy is not None else "")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines += [f"skipped {s['name']} ({s['op']}): {s['reason']}" for s in document["skipped"]]
    before, after = totals["before"], totals["after"]
    lines.append(f"model: params {count(before['params'])} -> {count(after['params'])} "
                 f"(compression {totals['param_compression']:.2f}x), MACs {count(before['macs'])} -> "
                 f"{count(after['macs'])} ({100 * (totals['macs_ratio'] or 0):.1f}% of the original)")
    return "\n".join(lines)


def render_subset(document: Dict[str, Any]) -> str:
    """What was kept, and the model's parameters and MACs before and after."""
    before, after = document["totals"]["before"], document["totals"]["after"]
    classes = ", ".join(f"{c['index']} ({c['label']})" for c in document["classes"])
    samples = ", ".join(f"{role} {n}" for role, n in document["samples"].items()) or "none"
    return "\n".join([
        f"compress subset: {document['model']} -> {document['output']}",
        f"classifier {document['classifier']}: classes {classes}, in this order",
        f"samples kept: {samples}",
        f"model: params {count(before['params'])} -> {count(after['params'])}, MACs {count(before['macs'])} -> "
        f"{count(after['macs'])}"])
