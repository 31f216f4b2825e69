"""The outcome of `edge-agent select`: every candidate with its numbers and verdict, the choice, and
where it is stored for reuse.

A decision is stored as JSON in `<cache>/select/`, one file per (device fingerprint, model files'
sha256, runtime versions): when any of them changes the file name changes and the choice is made
again. The settings it was made with (objective, budget, thresholds) are stored inside it; `select`
re-makes a decision whose settings differ, `--backend auto` takes whatever is stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent import __version__
from agent.cache import cache_folder, read_json, write_json
from agent.device.detect import DeviceSection
from agent.report import percent, utc_now

SELECTION_SCHEMA = "edge-agent/selection/1"
STATUSES = ("chosen", "rejected", "lost")


@dataclass
class Candidate:
    """One configuration raced by `select`: a model file, a backend, a precision, threads and options."""

    backend: str
    precision: str
    threads: Optional[int]
    options: Dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the bundle file it runs from, e.g. `onnx/fp32`
    derived: bool = False  # the precision is made on the device (quantized model, engine)
    status: str = "pending"
    reason: str = ""
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    throughput_per_s: Optional[float] = None
    iterations: int = 0
    rounds: int = 0  # latency runs it took part in (screening = 1)
    stability: Optional[str] = None  # the verdict on its last latency run: stable, unstable, unknown
    top1: Optional[float] = None
    fidelity: Optional[Dict[str, Any]] = None
    build: Optional[Dict[str, Any]] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`backend/precision` with the threads and options that tell it apart."""
        extras = [f"{self.threads} thr"] if self.threads else []
        extras += [f"{k}={v}" for k, v in sorted(self.options.items())]
        return f"{self.backend}/{self.precision}" + (f" ({', '.join(extras)})" if extras else "")

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as `selection.candidates[]` carries it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Candidate:
        """The inverse of `to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Decision:
    """A finished selection: the key it is valid for, the settings, every candidate, the choice."""

    key: Dict[str, Any]
    settings: Dict[str, Any]
    candidates: List[Candidate]
    reference: Dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    notes: List[str] = field(default_factory=list)
    created: str = field(default_factory=utc_now)
    reused: bool = False

    @property
    def choice(self) -> Optional[Candidate]:
        """The chosen candidate, or None when none was admissible."""
        return next((c for c in self.candidates if c.status == "chosen"), None)

    def to_dict(self) -> Dict[str, Any]:
        """The `selection` section of the JSON report."""
        choice = self.choice
        return {"choice": None if choice is None else choice.to_dict(), "settings": self.settings,
                "reference": self.reference, "candidates": [c.to_dict() for c in self.candidates],
                "elapsed_s": round(self.elapsed_s, 3), "notes": self.notes, "created": self.created,
                "reused": self.reused, "key": self.key}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Decision:
        """The inverse of `to_dict`."""
        return cls(data["key"], data["settings"], [Candidate.from_dict(c) for c in data["candidates"]],
                   data.get("reference", {}), data.get("elapsed_s", 0.0), data.get("notes", []),
                   data.get("created", utc_now()))


def decision_key(fingerprint: str, model_files: Dict[str, str], runtimes: Dict[str, Optional[str]]) -> Dict[str, Any]:
    """What a decision stays valid for: the device, the sha256 of each model file, each runtime's version."""
    return {"device": fingerprint, "models": dict(sorted(model_files.items())),
            "runtimes": dict(sorted(runtimes.items()))}


def decision_path(name: str, key: Dict[str, Any], folder: Optional[Path] = None) -> Path:
    """The file a decision for `key` is stored in (the model's name, then a digest of the key)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return (folder or cache_folder("select")) / f"{safe}-{digest}.json"


def load_decision(path: Path, key: Dict[str, Any]) -> Optional[Decision]:
    """The decision stored at `path` if it is for exactly `key`, else None (made again)."""
    data = read_json(path)
    if data is None or data.get("schema") != SELECTION_SCHEMA or data.get("key") != key:
        return None
    try:
        decision = Decision.from_dict(data)
    except (KeyError, TypeError):
        return None  # written by another edge-agent version: made again
    decision.reused = True
    return decision


def store_decision(path: Path, decision: Decision) -> None:
    """Write the decision (atomically) for later runs and `--backend auto`."""
    write_json(path, dict(decision.to_dict(), schema=SELECTION_SCHEMA))


def selection_report(decision: Decision, device: DeviceSection, model: str) -> Dict[str, Any]:
    """`select --json`: the device, the model and the `selection` section."""
    return {"schema": SELECTION_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
            "device": device.to_dict(), "model": model, "selection": decision.to_dict()}


def _cell(value: Optional[float], as_percent: bool = False) -> str:
    if value is None:
        return "-"
    return percent(value) if as_percent else f"{value:.4g}"


def render(decision: Decision, model: str) -> str:
    """The decision as a table: every candidate with its numbers, its verdict and why; then the choice."""
    header = ["status", "backend", "prec", "thr", "variant", "p50 ms", "p99 ms", "per s", "top1", "agree",
              "cosine", "rounds", "reason"]
    rows = [header]
    order = {"chosen": 0, "lost": 1, "rejected": 2}
    for c in sorted(decision.candidates, key=lambda c: order.get(c.status, 3)):
        fid = c.fidelity or {}
        rows.append([c.status, c.backend, c.precision, str(c.threads or "-"),
                     ",".join(f"{k}={v}" for k, v in sorted(c.options.items())) or "-", _cell(c.p50_ms),
                     _cell(c.p99_ms), _cell(c.throughput_per_s), _cell(c.top1, True),
                     _cell(fid.get("top1_agreement"), True), _cell(fid.get("cosine")), str(c.rounds), c.reason])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    made = f"the stored decision of {decision.created}" if decision.reused else "measured now"
    lines = [f"select: {model} ({made}, in {decision.elapsed_s:.1f} s; objective {decision.settings.get('objective')},"
             f" budget {decision.settings.get('budget')} points)"]
    lines += ["  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]
    choice = decision.choice
    lines.append(f"choice: {choice.label}" if choice else "choice: none (no candidate was admissible)")
    lines += [f"note: {note}" for note in decision.notes]
    lines += sorted({f"warning: {c.label}: {w}" for c in decision.candidates for w in c.warnings})
    return "\n".join(lines)
