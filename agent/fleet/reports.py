"""What the coordinator pulls out of the documents boards send: a board's hardware (a report's or an
`info` result's `device` section), its runtimes (`info`'s `runtimes`), and one `Measured` per report of
a bench/eval/profile result (docs/report.md).

The documents are untrusted: every field is read defensively — a missing section, a wrong type, a text
longer than its column or holding a NUL, an integer out of range, or a number that is not finite gives
None, never an exception. The message itself is kept whole in the store, so nothing is lost by that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional

TEXT_LIMIT = 1024  # the longest text kept in an indexed column; the payload keeps the rest
_INT_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Hardware:
    """The board a `device` section describes (agent/device/detect.py DeviceSection)."""

    kind: Optional[str]
    board_model: Optional[str]
    jetpack: Optional[str]
    l4t: Optional[str]
    soc: Optional[str]
    cpu_model: Optional[str]
    cpu_arch: Optional[str]
    cpu_cores: Optional[int]
    memory_total_mib: Optional[int]
    os: Optional[str]
    kernel: Optional[str]
    cuda: Optional[str]
    tensorrt: Optional[str]
    fingerprint: Optional[str]


@dataclass(frozen=True)
class Runtime:
    """One runtime of an `info` report: its version, or why it cannot run."""

    name: str
    available: bool
    version: Optional[str]
    reason: Optional[str]


@dataclass(frozen=True)
class Measured:
    """One report of a measurement result: the configuration it ran and the measures compared across boards."""

    position: int
    kind: Optional[str]
    status: Optional[str]
    board_model: Optional[str]
    model_name: Optional[str]
    model_sha256: Optional[str]
    model_format: Optional[str]
    backend: Optional[str]
    runtime_version: Optional[str]
    precision: Optional[str]
    threads: Optional[int]
    batch: Optional[int]
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    throughput_per_s: Optional[float]
    peak_rss_mb: Optional[float]
    top1: Optional[float]
    top1_agreement: Optional[float]
    stability: Optional[str]


def columns(record: Any) -> Dict[str, Any]:
    """A `Hardware`, `Runtime` or `Measured` as a table row's columns (their fields hold plain values only, so no
    deep copy is needed: what `dataclasses.asdict` would spend most of ingest's time on)."""
    return {item.name: getattr(record, item.name) for item in fields(record)}


def hardware(device: Any) -> Optional[Hardware]:
    """The board a `device` section describes, or None when it is not an object."""
    if not isinstance(device, dict):
        return None
    return Hardware(
        kind=text(device.get("kind"), 32), board_model=board_model(device),
        jetpack=text(lookup(device, "jetson", "jetpack")), l4t=text(lookup(device, "jetson", "l4t")),
        soc=text(lookup(device, "jetson", "soc")), cpu_model=text(lookup(device, "cpu", "model")),
        cpu_arch=text(lookup(device, "cpu", "arch")), cpu_cores=integer(lookup(device, "cpu", "cores")),
        memory_total_mib=integer(device.get("memory_total_mib")), os=text(device.get("os")),
        kernel=text(device.get("kernel")), cuda=text(device.get("cuda")), tensorrt=text(device.get("tensorrt")),
        fingerprint=text(device.get("fingerprint"), 16))


def board_model(device: Any) -> Optional[str]:
    """What boards are grouped by: the device tree's model; for a machine without one (an x86 host),
    its CPU model; else its kind."""
    if not isinstance(device, dict):
        return None
    return text(device.get("model")) or text(lookup(device, "cpu", "model")) or text(device.get("kind"))


def runtimes(info_report: Any) -> Optional[List[Runtime]]:
    """The runtimes an `info` report lists (None when it lists none: a captured tree, or not an info report)."""
    entries = info_report.get("runtimes") if isinstance(info_report, dict) else None
    if not isinstance(entries, list):
        return None
    found = {}
    for entry in entries:
        name = text(entry.get("name"), 64) if isinstance(entry, dict) else None
        if name is not None:
            found[name] = Runtime(name, entry.get("available") is True, text(entry.get("version")),
                                  text(entry.get("reason")))
    return list(found.values())


def measurements(result_report: Any) -> List[Measured]:
    """One `Measured` per report object in a bench/eval/profile result's `{"reports": [...]}`."""
    reports = result_report.get("reports") if isinstance(result_report, dict) else None
    if not isinstance(reports, list):
        return []
    return [_measured(position, report) for position, report in enumerate(reports) if isinstance(report, dict)]


def _measured(position: int, report: Any) -> Measured:
    configuration = lookup(report, "backend", "configuration")
    threads = None
    if isinstance(configuration, dict):
        threads = integer(configuration.get("threads", configuration.get("intra_op_threads")))
    return Measured(
        position=position, kind=text(report.get("kind"), 16), status=text(report.get("status"), 16),
        board_model=board_model(report.get("device")), model_name=text(lookup(report, "model", "name")),
        model_sha256=text(lookup(report, "model", "sha256"), 64),
        model_format=text(lookup(report, "model", "format"), 16), backend=text(lookup(report, "backend", "name"), 32),
        runtime_version=text(lookup(report, "backend", "version")),
        precision=text(lookup(report, "model", "precision"), 16),
        threads=threads if threads is not None else integer(lookup(report, "latency", "environment", "threads")),
        batch=integer(lookup(report, "latency", "batch")), p50_ms=number(lookup(report, "latency", "p50_ms")),
        p99_ms=number(lookup(report, "latency", "p99_ms")),
        throughput_per_s=number(lookup(report, "latency", "throughput_per_s")),
        peak_rss_mb=number(lookup(report, "memory", "peak_rss_mb")), top1=number(lookup(report, "accuracy", "top1")),
        top1_agreement=number(lookup(report, "fidelity", "top1_agreement")),
        stability=text(lookup(report, "latency", "stability", "verdict"), 16))


def lookup(document: Any, *path: str) -> Any:
    """`document[a][b]...`, or None where a step is missing or not an object."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def text(value: Any, limit: int = TEXT_LIMIT) -> Optional[str]:
    """A string that fits a column (at most `limit` characters, no NUL), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= limit and "\0" not in value else None


def integer(value: Any) -> Optional[int]:
    """A JSON integer that fits a 32-bit column, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _INT_LIMIT else None


def number(value: Any) -> Optional[float]:
    """A finite JSON number as a float, else None (a report's "NaN"/"Infinity" strings included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer beyond a double
        return None
    return result if math.isfinite(result) else None
