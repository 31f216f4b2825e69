"""The versioned measurement report (`edge-agent/report/1`, docs/report.md) and its renderings.

A report is one model file run by one backend at one configuration. `bench` and `eval` produce one
per configuration; `--json` prints them as a JSON array, the default is a side-by-side table.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from agent import __version__
from agent.device.detect import DeviceSection

REPORT_SCHEMA = "edge-agent/report/1"

# Below this many samples a fidelity verdict (top-1 agreement above all) is weak: one disagreement in 8
# moves it by 12.5 points. The table marks such figures; the JSON carries the count (`fidelity.samples`).
FIDELITY_MIN_SAMPLES = 30


def utc_now() -> str:
    """The current UTC time as an ISO 8601 string with a `Z`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Report:
    """One configuration's measurement; sections are None where they were not measured."""

    kind: str
    device: DeviceSection
    model: Dict[str, Any]
    backend: Dict[str, Any]
    inputs: Optional[List[Dict[str, Any]]] = None
    latency: Optional[Dict[str, Any]] = None
    latency_by_batch: Optional[List[Dict[str, Any]]] = None
    memory: Optional[Dict[str, Any]] = None
    thermal: Optional[Dict[str, Any]] = None
    accuracy: Optional[Dict[str, Any]] = None
    fidelity: Optional[Dict[str, Any]] = None
    profile: Optional[Dict[str, Any]] = None
    status: str = "ok"
    error: Optional[Dict[str, str]] = None
    created: str = field(default_factory=utc_now)

    @property
    def label(self) -> str:
        """`backend/precision`, how tables and messages name this configuration."""
        return f"{self.backend['name']}/{self.model.get('precision')}"

    def to_dict(self) -> Dict[str, Any]:
        """The report as JSON-ready data, in the documented field order."""
        return {
            "schema": REPORT_SCHEMA, "kind": self.kind, "created": self.created, "status": self.status,
            "error": self.error, "agent": {"version": __version__}, "device": self.device.to_dict(),
            "model": self.model, "backend": self.backend, "inputs": self.inputs, "latency": self.latency,
            "latency_by_batch": self.latency_by_batch, "memory": self.memory, "thermal": self.thermal,
            "accuracy": self.accuracy, "fidelity": self.fidelity, "profile": self.profile,
        }


def to_json(reports: Sequence[Report]) -> str:
    """Reports as one JSON array (always an array, also for a single configuration)."""
    return json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False)


def _number(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.4f}"
    return text + unit


def _get(section: Optional[Dict[str, Any]], key: str) -> Optional[Any]:
    return None if section is None else section.get(key)


def _yes_no(flag: Optional[bool]) -> str:
    return "unknown" if flag is None else "yes" if flag else "no"


_COLUMNS = (
    ("backend", lambda r: r.backend["name"]),
    ("version", lambda r: runtime_label(r.backend.get("version"), _package(r))),
    ("format", lambda r: r.model.get("format", "-")),
    ("prec", lambda r: r.model.get("precision", "-")),
    ("thr", lambda r: str(_threads(r))),
    ("load ms", lambda r: _number(_get(r.latency, "load_ms"))),
    ("first ms", lambda r: _number(_get(r.latency, "first_ms"))),
    ("p50 ms", lambda r: _number(_get(r.latency, "p50_ms"))),
    ("p90 ms", lambda r: _number(_get(r.latency, "p90_ms"))),
    ("p99 ms", lambda r: _number(_get(r.latency, "p99_ms"))),
    ("mean ms", lambda r: _number(_get(r.latency, "mean_ms"))),
    ("std ms", lambda r: _number(_get(r.latency, "std_ms"))),
    ("iters", lambda r: str(_get(r.latency, "iterations") or "-")),
    ("per s", lambda r: _number(_get(r.latency, "throughput_per_s"))),
    ("top1", lambda r: percent(_get(r.accuracy, "top1"))),
    ("top5", lambda r: percent(_get(r.accuracy, "top5"))),
    ("agree", lambda r: _agreement(r.fidelity)),
    ("cosine", lambda r: _cosine(_get(r.fidelity, "cosine"))),
    ("peak MB", lambda r: _number(_get(r.memory, "peak_rss_mb"))),
    ("°C", lambda r: _number(_get(_get(r.thermal, "temperature_c"), "after"))),
    ("throttled", lambda r: "-" if r.thermal is None else _yes_no(r.thermal.get("throttled"))),
)


def runtime_label(version: Optional[str], package: Optional[str] = None) -> str:
    """A runtime's version with the package it came from where that is not the runtime's own name
    ("ai-edge-litert 2.3.0", not "2.3.0", which reads like TensorFlow's); `-` when unknown."""
    if not version:
        return "-"
    return f"{package.replace('_', '-')} {version}" if package else version


def _package(report: Report) -> Optional[str]:
    return (report.backend.get("configuration") or {}).get("package")


def _threads(report: Report) -> Any:
    config = report.backend.get("configuration") or {}
    return config.get("threads", config.get("intra_op_threads", "-"))


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage with one decimal; `-` for None (every table prints them so)."""
    return "-" if value is None else f"{100 * value:.1f}%"


def _agreement(fidelity: Optional[Dict[str, Any]]) -> str:
    """Top-1 agreement, marked `(N, weak)` when fewer than FIDELITY_MIN_SAMPLES samples judged it."""
    text = percent(_get(fidelity, "top1_agreement"))
    samples = _get(fidelity, "samples")
    if text == "-" or samples is None or samples >= FIDELITY_MIN_SAMPLES:
        return text
    return f"{text} ({samples}, weak)"


def _cosine(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6f}"


def render_table(reports: Sequence[Report]) -> str:
    """A side-by-side table of every configuration, then one line per failed configuration."""
    if not reports:
        return "no configuration was measured"
    first = reports[0]
    lines = [f"{first.kind}: {first.model.get('name')} ({first.model.get('bundle') or first.model.get('path')})",
             f"device: {first.device.info.summary}"]
    ok = [r for r in reports if r.status == "ok"]
    if ok:
        rows = [[name for name, _ in _COLUMNS]] + [[cell(r) for _, cell in _COLUMNS] for r in ok]
        keep = [i for i in range(len(_COLUMNS)) if any(row[i] != "-" for row in rows[1:])]
        widths = [max(len(row[i]) for row in rows) for i in keep]
        for row in rows:
            lines.append("  ".join(row[i].ljust(w) for i, w in zip(keep, widths)).rstrip())
    judged = [r.fidelity for r in ok if r.fidelity and r.fidelity.get("reference")]
    if judged:
        counts = sorted({str(f.get("samples")) for f in judged})
        lines.append(f"agree, cosine: vs {judged[0]['reference']}, {'/'.join(counts)} samples"
                     + (f" (fewer than {FIDELITY_MIN_SAMPLES}: weak)" if any(
                         (f.get("samples") or 0) < FIDELITY_MIN_SAMPLES for f in judged) else ""))
    for report in reports:
        if report.status != "ok" and report.error:
            lines.append(f"FAILED {report.label} ({report.model.get('format')}): {report.error['message']}")
    return "\n".join(lines)
