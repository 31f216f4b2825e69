"""The versioned measurement report (`edge-agent/report/1`, docs/report.md) and its renderings.

A report is one model file run by one backend at one configuration. `bench` and `eval` produce one
per configuration; `--json` prints them as a JSON array, the default is a side-by-side table.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

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
    # Every timed call (agent.measure.messages.RunTimes as dicts) when asked for (`--export-times`); not part
    # of the report's JSON, which stays one summary per configuration.
    run_times: Optional[List[Dict[str, Any]]] = field(default=None, repr=False, compare=False)

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


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


@dataclass(frozen=True)
class Column:
    """One figure of a configuration: its table header, its CSV name, how to read it from a report, and how the
    table prints it (the CSV keeps the value as it is)."""

    header: str
    name: str
    value: Callable[[Report], Any]
    text: Callable[[Any], str] = _number
    in_csv: bool = True  # False: the CSV has this figure in columns of its own


def _latency(key: str) -> Callable[[Report], Any]:
    return lambda r: _get(r.latency, key)


def _stability(key: str) -> Callable[[Report], Any]:
    return lambda r: _get(_get(r.latency, "stability"), key)


def _environment(moment: str, key: str) -> Callable[[Report], Any]:
    return lambda r: _get(_get(_get(r.latency, "environment"), moment), key)


def _change(key: str) -> Callable[[Report], Any]:
    """A figure of `latency.environment` before and after the loop (None when there was no loop); a load
    average is its 1-minute value."""
    def read(report: Report) -> Any:
        environment = _get(report.latency, "environment")
        if environment is None:
            return None
        pair = [_get(environment.get(moment), key) for moment in ("before", "after")]
        return [_first(v) if isinstance(v, list) else v for v in pair]
    return read


def _before_after(pair: Optional[List[Any]], text: Callable[[Any], str]) -> str:
    """`a -> b`, one value when both agree, `unknown` where the board does not expose it."""
    if pair is None:
        return "-"
    before, after = ("unknown" if v is None else text(v) for v in pair)
    return before if before == after else f"{before} -> {after}"


def _verdict(verdict: Optional[str]) -> str:
    """The stability verdict, an unstable one in capitals so that it stands out."""
    return "-" if verdict is None else "UNSTABLE" if verdict == "unstable" else verdict


def _first(values: Optional[List[float]]) -> Optional[float]:
    return None if not values else values[0]


_IDENTITY = (
    Column("backend", "backend", lambda r: r.backend["name"], _text),
    Column("version", "version", lambda r: report_runtime(r), _text),
    Column("format", "format", lambda r: r.model.get("format"), _text),
    Column("prec", "precision", lambda r: r.model.get("precision"), _text),
    Column("thr", "threads", lambda r: threads_of(r), _text),
)
SUMMARY_COLUMNS = _IDENTITY + (
    Column("load ms", "load_ms", _latency("load_ms")),
    Column("first ms", "first_ms", _latency("first_ms")),
    Column("p50 ms", "p50_ms", _latency("p50_ms")),
    Column("p99 ms", "p99_ms", _latency("p99_ms")),
    Column("mean ms", "mean_ms", _latency("mean_ms")),
    Column("iters", "iterations", _latency("iterations"), _text),
    Column("per s", "throughput_per_s", _latency("throughput_per_s")),
    Column("top1", "top1", lambda r: _get(r.accuracy, "top1"), lambda v: percent(v)),
    Column("top5", "top5", lambda r: _get(r.accuracy, "top5"), lambda v: percent(v)),
    Column("agree", "top1_agreement", lambda r: r.fidelity, lambda f: _agreement(f)),
    Column("cosine", "cosine", lambda r: _get(r.fidelity, "cosine"), lambda v: _cosine(v)),
    Column("peak MB", "peak_rss_mb", lambda r: _get(r.memory, "peak_rss_mb")),
    Column("°C", "temperature_c", lambda r: _get(_get(r.thermal, "temperature_c"), "after")),
    Column("throttled", "throttled", lambda r: r.thermal, lambda t: "-" if t is None else _yes_no(t.get("throttled"))),
    Column("stable", "stability", _stability("verdict"), _verdict),
)
# The latency table: every statistic, and the rounds' medians the stability verdict compared.
LATENCY_COLUMNS = (
    Column("config", "label", lambda r: r.label, _text),
    Column("min", "min_ms", _latency("min_ms")),
    Column("p50", "p50_ms", _latency("p50_ms")),
    Column("p90", "p90_ms", _latency("p90_ms")),
    Column("p95", "p95_ms", _latency("p95_ms")),
    Column("p99", "p99_ms", _latency("p99_ms")),
    Column("p99.9", "p99_9_ms", _latency("p99_9_ms")),
    Column("max", "max_ms", _latency("max_ms")),
    Column("mean", "mean_ms", _latency("mean_ms")),
    Column("std", "std_ms", _latency("std_ms")),
    Column("cov", "cov", _latency("cov"), lambda v: percent(v)),
    Column("rounds' p50", "round_p50_ms", _stability("round_p50_ms"),
           lambda v: "-" if not v else " ".join(_number(m) for m in v)),
    Column("governor", "governor", _change("governor"), lambda v: _before_after(v, _text), in_csv=False),
    Column("MHz", "cpu_freq_mhz", _change("cpu_freq_mhz"), lambda v: _before_after(v, _number), in_csv=False),
    Column("load avg", "load_average", _change("load_average"), lambda v: _before_after(v, _number), in_csv=False),
)
# CSV only: what the tables show in one cell or leave to the JSON.
_CSV_EXTRAS = (
    Column("", "batch", _latency("batch")),
    Column("", "fidelity_samples", lambda r: _get(r.fidelity, "samples")),
    Column("", "fidelity_reference", lambda r: _get(r.fidelity, "reference")),
    Column("", "stability_reasons", lambda r: "; ".join(_stability("reasons")(r) or []) or None),
    Column("", "governor_before", _environment("before", "governor")),
    Column("", "governor_after", _environment("after", "governor")),
    Column("", "cpu_freq_mhz_before", _environment("before", "cpu_freq_mhz")),
    Column("", "cpu_freq_mhz_after", _environment("after", "cpu_freq_mhz")),
    Column("", "load_average_before", lambda r: _first(_environment("before", "load_average")(r))),
    Column("", "load_average_after", lambda r: _first(_environment("after", "load_average")(r))),
    Column("", "other_cpu_cores", lambda r: _get(_get(r.latency, "environment"), "other_cpu_cores")),
    Column("", "status", lambda r: r.status),
    Column("", "error", lambda r: _get(r.error, "message")),
)


def csv_columns() -> List[Column]:
    """Every column of the CSV, in order: the tables' (each once, by name), then the CSV-only ones."""
    seen: Dict[str, Column] = {}
    for column in _IDENTITY + LATENCY_COLUMNS + SUMMARY_COLUMNS + _CSV_EXTRAS:
        if column.in_csv:
            seen.setdefault(column.name, column)
    return list(seen.values())


def to_csv(reports: Sequence[Report]) -> str:
    """The reports as CSV: a header, then one row per configuration (failed ones with their error)."""
    columns = csv_columns()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    for report in reports:
        writer.writerow([_csv_value(column.value(report)) for column in columns])
    return out.getvalue().rstrip("\n")


def _csv_value(value: Any) -> Any:
    """A cell as the CSV holds it: empty for None, a fidelity section's agreement, a list joined by spaces."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return value.get("top1_agreement", "")
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return value


def times_json(reports: Sequence[Report]) -> str:
    """`--export-times`: every timed call of every configuration and batch size, as a JSON array of
    {configuration, ..., runs: [{round, startMs, endMs, latencyMs}]} (docs/report.md)."""
    exported = []
    for report in reports:
        for times in report.run_times or []:
            runs = [{"round": number, "startMs": start, "endMs": round(start + latency, 6), "latencyMs": latency}
                    for number, start, latency in zip(times["round"], times["start_ms"], times["latency_ms"])]
            exported.append({"configuration": report.label, "model": report.model.get("name"),
                             "backend": report.backend["name"], "version": report.backend.get("version"),
                             "precision": report.model.get("precision"), "threads": threads_of(report),
                             "batch": times["batch"], "runs": runs})
    return json.dumps(exported, allow_nan=False)


def runtime_label(version: Optional[str], package: Optional[str] = None) -> str:
    """A runtime's version with the package it came from where that is not the runtime's own name
    ("ai-edge-litert 2.3.0", not "2.3.0", which reads like TensorFlow's); `-` when unknown."""
    if not version:
        return "-"
    return f"{package.replace('_', '-')} {version}" if package else version


def report_runtime(report: Report) -> str:
    """The runtime version a report ran, with its package where that differs (`runtime_label`)."""
    return runtime_label(report.backend.get("version"), (report.backend.get("configuration") or {}).get("package"))


def threads_of(report: Report) -> Any:
    """The threads a report's runtime ran with (TensorRT/TFLite `threads`, ONNX Runtime's intra-op); `-` unknown."""
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
    """The summary table of every configuration, the latency table (every statistic and the machine around
    the timed loop) where latency was measured, why a row is unstable, then one line per failed one."""
    if not reports:
        return "no configuration was measured"
    first = reports[0]
    lines = [f"{first.kind}: {first.model.get('name')} ({first.model.get('bundle') or first.model.get('path')})",
             f"device: {first.device.info.summary}"]
    ok = [r for r in reports if r.status == "ok"]
    if ok:
        lines += _table(SUMMARY_COLUMNS, ok)
    timed = [r for r in ok if r.latency and "p50_ms" in r.latency]
    if timed:
        lines += ["", "latency (ms) and the machine before -> after the timed loop:"] + _table(LATENCY_COLUMNS, timed)
    judged = [r.fidelity for r in ok if r.fidelity and r.fidelity.get("reference")]
    if judged:
        counts = sorted({str(f.get("samples")) for f in judged})
        lines.append(f"agree, cosine: vs {judged[0]['reference']}, {'/'.join(counts)} samples"
                     + (f" (fewer than {FIDELITY_MIN_SAMPLES}: weak)" if any(
                         (f.get("samples") or 0) < FIDELITY_MIN_SAMPLES for f in judged) else ""))
    for report in timed:
        reasons = _stability("reasons")(report)
        if reasons:
            lines.append(f"UNSTABLE {report.label}: {'; '.join(reasons)}")
    for report in reports:
        if report.status != "ok" and report.error:
            lines.append(f"FAILED {report.label} ({report.model.get('format')}): {report.error['message']}")
    return "\n".join(lines)


def _table(columns: Sequence[Column], reports: Sequence[Report]) -> List[str]:
    """Aligned rows under a header, leaving out the columns no report has a figure for."""
    return aligned([[c.header for c in columns]] + [[c.text(c.value(r)) for c in columns] for r in reports])


def aligned(rows: Sequence[Sequence[str]]) -> List[str]:
    """A header and rows of cells as aligned lines, without the columns whose every cell below the header
    is `-`."""
    keep = [i for i in range(len(rows[0])) if any(row[i] != "-" for row in rows[1:])] if len(rows) > 1 \
        else list(range(len(rows[0])))
    widths = [max(len(row[i]) for row in rows) for i in keep]
    return ["  ".join(row[i].ljust(w) for i, w in zip(keep, widths)).rstrip() for row in rows]
