"""`compress lowrank --sweep`: one factorised model per kept energy, each measured like `bench` on ONNX Runtime
beside the original, as the accuracy–speed-up curve (docs/compress.md, "Sweep").

Every point is written (a folder or `.onnx` file per energy under the sweep's folder) and measured in its
own worker with the same settings; its figures are `compare`'s (static totals of the file, p50, Top-1/Top-5)
and its change against the original too: the parameter compression and the speed-up as ratios, the MACs
as the fraction left.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

from agent import __version__
from agent.compress.plot import sweep_chart
from agent.compress.ranks import at_energy
from agent.device.detect import DeviceSection
from agent.errors import AgentError
from agent.jobs.compare import change, side
from agent.jobs.compress import COMPRESS_SCHEMA, LowRankRequest, analyse, factorise, lowrank_document, target_path
from agent.jobs.measure import run_measure
from agent.measure.isolate import ProgressHandler
from agent.measure.plan import MeasureRequest, StartHandler
from agent.profile.render import count, number, significant
from agent.report import percent, utc_now

SWEEP_SCHEMA = "edge-agent/compress-sweep/1"


def run_sweep(request: LowRankRequest, energies: Sequence[float], settings: MeasureRequest, device: DeviceSection,
              on_start: Optional[StartHandler] = None, on_progress: Optional[ProgressHandler] = None,
              plot: bool = False) -> Dict[str, Any]:
    """Write and measure one model per energy; the sweep document (also written as sweep.json, sweep.txt and,
    with `plot`, sweep.png in the sweep's folder)."""
    source, found, skipped = analyse(request)
    folder = target_path(source, request.output, "sweep", request.force, folder=True)
    folder.mkdir(parents=True)
    suffix = ".onnx" if source.bundle.is_plain_file else ""
    points = []
    for energy in energies:
        written, results = factorise(source, at_energy(found, energy), folder / f"energy-{energy:g}{suffix}",
                                     f"sweep point: kept energy {energy:g} per layer")
        points.append(lowrank_document(request, source, skipped, results, energy, written))
    measure = dataclasses.replace(settings, kind="bench", backends=["onnxruntime"], precisions=["fp32"],
                                  trace=None)
    baseline = _figures(run_measure(dataclasses.replace(measure, model=request.model), device, on_start,
                                    on_progress))
    rows = []
    for point in points:
        figures = _figures(run_measure(dataclasses.replace(measure, model=point["output"]), device, on_start,
                                       on_progress))
        rows.append({"energy": point["energy"], "model": point["output"],
                     "factorised": sum(1 for layer in point["layers"] if layer["ranks"]),
                     "ranks": {layer["name"]: layer["ranks"] for layer in point["layers"]},
                     "figures": figures, "change": change(baseline, figures)})
    document = {"schema": SWEEP_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
                "device": device.to_dict(), "model": request.model, "output": str(folder), "conv": request.conv,
                "layers_compress_schema": COMPRESS_SCHEMA, "baseline": baseline, "points": rows,
                "files": {"json": str(folder / "sweep.json"), "table": str(folder / "sweep.txt"),
                          "plot": str(folder / "sweep.png") if plot else None}}
    (folder / "sweep.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (folder / "sweep.txt").write_text(render_sweep(document) + "\n", encoding="utf-8")
    if plot:
        sweep_chart(document, folder / "sweep.png")
    return document


def _figures(reports: List[Any]) -> Dict[str, Any]:
    """`compare`'s figures of the one ONNX Runtime FP32 report; its failure as an `AgentError`."""
    report = reports[0]
    if report.status != "ok":
        raise AgentError(f"{report.model.get('path')}: {report.error['message'] if report.error else 'failed'}")
    return side(report)


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_sweep(document: Dict[str, Any]) -> str:
    """The accuracy–speed-up table: the original, then one row per energy."""
    header = ["energy", "layers", "top-1", "top-5", "params", "compression", "MACs", "MACs left", "p50 ms",
              "speed-up"]
    base = document["baseline"]
    cells = [header, ["original", "-", percent(base["top1"]), percent(base["top5"]), significant(base["params"]),
                      "1.00x", count(base["macs"]), "100.0%", number(base["p50_ms"]), "1.00x"]]
    for row in document["points"]:
        figures, delta = row["figures"], row["change"]
        left = None if delta["macs_reduction"] is None else 1 - delta["macs_reduction"]
        cells.append([f"{row['energy']:g}", str(row["factorised"]), percent(figures["top1"]), percent(figures["top5"]),
                      significant(figures["params"]), _ratio(delta["param_compression"]), count(figures["macs"]),
                      percent(left), number(figures["p50_ms"]), _ratio(delta["speedup"])])
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [f"compress lowrank --sweep: {document['model']} -> {document['output']} ({document['conv']}; "
             f"onnxruntime fp32, p50 of each)", f"device: {document['device'].get('summary', '-')}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)
