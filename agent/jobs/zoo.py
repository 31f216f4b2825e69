"""`edge-agent zoo`: the classic tables regenerated on this board (docs/compress.md, "The classic tables").

The lightweight networks are built here (agent/zoo, seeded random weights), counted by the static
profiler and by the builder itself, and timed on ONNX Runtime FP32 at 1 thread and at the default threads,
beside the figures the MobileNetV2 paper printed. Top-1 needs trained weights and is not invented.
The ResNet table builds ResNet-50 and ResNet-101 with a dynamic batch as bundles with seeded calibration
data, and runs them at batch 8 in FP32 and in ONNX Runtime INT8 made on the device, with fidelity against
FP32 in place of Top-1, beside the TensorRT 4 figures.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from agent import __version__
from agent.bundle import TensorSpec, new_bundle
from agent.device.detect import DeviceSection
from agent.errors import AgentError, UsageError
from agent.jobs.measure import run_measure
from agent.measure.isolate import ProgressHandler
from agent.measure.latency import Warmup
from agent.measure.plan import MeasureRequest, StartHandler
from agent.profile.render import count, number, significant
from agent.profile.static import Profile, static_profile
from agent.report import Report, percent, threads_of, utc_now
from agent.zoo.nets import resnet
from agent.zoo.published import LIGHTWEIGHT, TENSORRT, Published

ZOO_SCHEMA = "edge-agent/zoo/1"
NEEDS_WEIGHTS = "needs trained weights"


@dataclass
class ZooRequest:
    """`edge-agent zoo` as data: which tables, and the latency loop of each configuration."""

    names: Optional[List[str]] = None
    latency: bool = True
    resnet: bool = False
    backend: str = "onnxruntime"  # what runs the ResNets' FP32 and derived INT8 (tensorrt on a Jetson)
    batch: int = 8
    calibration: int = 16
    warmup: Warmup = Warmup(3)
    iterations: int = 20
    min_seconds: float = 0.5


def two_figures(value: float) -> float:  # a published "4.2 M" is matched by 4.15 M .. 4.25 M
    """`value` rounded to two significant figures."""
    return float(f"{value:.2g}")


def counts(profile: Profile, builder_macs: int) -> Dict[str, Any]:
    """Parameters (with and without BatchNorm's scale and shift), MACs by the profiler and by the builder."""
    params = sum(entry["params"] for entry in profile.constants()[0].values())
    norm = sum(c.params for c in profile.layers if c.kind == "batchnorm")
    return {"params": params, "params_without_bn": params - norm, "macs": profile.totals()["macs"],
            "builder_macs": builder_macs}


def lightweight(entry: Published, folder: Path, request: ZooRequest, device: DeviceSection,
                on_start: Optional[StartHandler], on_progress: Optional[ProgressHandler]) -> Dict[str, Any]:
    """One row: built, counted, timed at 1 thread and at the default threads."""
    net = entry.build()
    path = folder / f"{net.name}.onnx"
    path.write_bytes(net.model(net.output).SerializeToString())
    row: Dict[str, Any] = {"name": entry.name, "variant": entry.variant, "model": net.name,
                           **counts(static_profile(path), net.macs)}
    ours = {two_figures(row["params"] / 1e6), two_figures(row["params_without_bn"] / 1e6)}
    row.update(published={"top1": entry.top1, "params_m": entry.params_m, "macs_m": entry.macs_m,
                          "cpu_ms": entry.cpu_ms, "revised_params_m": entry.revised_params_m, "note": entry.note},
               params_match=entry.params_m in ours,
               revised_match=None if entry.revised_params_m is None else entry.revised_params_m in ours,
               top1=NEEDS_WEIGHTS, latency=None)
    if request.latency:
        settings = MeasureRequest(model=str(path), backends=["onnxruntime"], warmup=request.warmup,
                                  iterations=request.iterations, min_seconds=request.min_seconds)
        single = _only(run_measure(dataclasses.replace(settings, threads=1), device, on_start, on_progress))
        default = _only(run_measure(settings, device, on_start, on_progress))
        row["latency"] = {"p50_ms_1_thread": _p50(single), "p50_ms_default": _p50(default),
                          "default_threads": threads_of(default),
                          "stability_1_thread": _verdict(single), "stability_default": _verdict(default)}
    return row


def _verdict(report: Report) -> Optional[str]:
    return (report.latency.get("stability") or {}).get("verdict") if report.latency else None


def _ms(value: Optional[float], verdict: Optional[str]) -> str:
    """A p50, starred when its timed loop was judged unstable (docs/report.md, Stability)."""
    text = "-" if value is None else f"{value:.0f}" if value >= 1000 else number(value)
    return text + ("*" if verdict == "unstable" else "")


def _p50(report: Report) -> float:
    return float((report.latency or {})["p50_ms"])


def _only(reports: List[Report]) -> Report:
    report = reports[0]
    if report.status != "ok" or not report.latency:
        raise AgentError(f"{report.model.get('path')} {report.label}: "
                         f"{report.error['message'] if report.error else 'no latency measured'}")
    return report


def resnet_row(depth: int, folder: Path, request: ZooRequest, device: DeviceSection,
               on_start: Optional[StartHandler], on_progress: Optional[ProgressHandler]) -> Dict[str, Any]:
    """ResNet-`depth` at `request.batch`: FP32 and INT8 made on the device, on `request.backend` (ONNX Runtime by
    default; TensorRT builds both engines, INT8 calibrated on the bundle's data), fidelity, the speed-up."""
    published = next(row for row in TENSORRT if row.depth == depth)
    net = resnet(depth, batch=1)
    target = folder / net.name
    target.mkdir()
    model = net.model(net.output, dynamic_batch=True)
    path = target / "model.fp32.onnx"
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(0)
    calibration = rng.normal(0.0, 1.0, (request.calibration, 3, 224, 224)).astype(np.float32)
    new_bundle(target, net.name, [TensorSpec("input", ("batch", 3, 224, 224), layout="NCHW")],
               [TensorSpec("logits", ("batch", 1000))], path, {"calibration": (calibration, None)},
               {"generator": f"edge-agent {__version__} zoo", "seed": 0,
                "notes": "seeded He-normal weights, identity BatchNorm; calibration: N(0, 1) images"})
    settings = MeasureRequest(model=str(target), backends=[request.backend], derive=True, precisions=["fp32", "int8"],
                              batch=[request.batch], warmup=request.warmup, iterations=request.iterations,
                              min_seconds=request.min_seconds)
    reports = {r.model.get("precision"): r for r in run_measure(settings, device, on_start, on_progress)}
    fp32, int8 = _only([reports["fp32"]]), _only([reports["int8"]])
    fp32_ms, int8_ms = _p50(fp32), _p50(int8)
    return {"name": published.name, "batch": request.batch,
            **counts(static_profile(path, {"input": [request.batch, 3, 224, 224]}), net.macs * request.batch),
            "fp32_ms": fp32_ms, "int8_ms": int8_ms, "stability": {"fp32": _verdict(fp32), "int8": _verdict(int8)},
            "speedup": round(fp32_ms / int8_ms, 3), "backend": request.backend,
            "threads": threads_of(fp32),
            "fidelity": int8.fidelity, "published": dataclasses.asdict(published)}


def run_zoo(request: ZooRequest, device: DeviceSection, on_start: Optional[StartHandler] = None,
            on_progress: Optional[ProgressHandler] = None) -> Dict[str, Any]:
    """The zoo document: the lightweight table and, with `request.resnet`, the ResNet FP32/INT8 table."""
    chosen = [e for e in LIGHTWEIGHT if request.names is None or e.name in request.names]
    if request.names is not None and len(chosen) != len(request.names):
        raise UsageError(f"--only: the networks are {', '.join(e.name for e in LIGHTWEIGHT)}")
    with tempfile.TemporaryDirectory(prefix="edge-agent-zoo-") as work:
        rows = [lightweight(e, Path(work), request, device, on_start, on_progress) for e in chosen]
        resnets = [resnet_row(depth, Path(work), request, device, on_start, on_progress)
                   for depth in (50, 101)] if request.resnet else []
    return {"schema": ZOO_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
            "device": device.to_dict(), "lightweight": rows, "resnet": resnets}


def _cells(header: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header] + rows]


def render_zoo(document: Dict[str, Any]) -> str:
    """The lightweight table (ours beside the paper's) and the ResNet table (ours beside TensorRT 4's)."""
    lines = [f"device: {document['device'].get('summary', '-')}",
             "lightweight networks at 224x224, built here with seeded random weights; published: MobileNetV2 "
             "paper (v1), CPU = one Pixel 1 core (TF-Lite)"]
    rows = []
    for row in document["lightweight"]:
        paper, latency = row["published"], row["latency"] or {}
        match = "yes" if row["params_match"] else (
            f"no; v4: {paper['revised_params_m']}M {'yes' if row['revised_match'] else 'no'}"
            if row["revised_match"] is not None else "no")
        rows.append([row["name"], row["variant"], f"{paper['top1']}%", row["top1"], significant(row["params"]),
                     significant(row["params_without_bn"]), f"{paper['params_m']}M", match, count(row["macs"]),
                     count(row["builder_macs"]), f"{paper['macs_m']}M",
                     _ms(latency.get("p50_ms_1_thread"), latency.get("stability_1_thread")),
                     _ms(latency.get("p50_ms_default"), latency.get("stability_default")),
                     "-" if paper["cpu_ms"] is None else str(paper["cpu_ms"])])
    threads = {str((row["latency"] or {}).get("default_threads")) for row in document["lightweight"]} - {"None"}
    if threads:
        lines[1] += f"; default threads here: {', '.join(sorted(threads))}"
    lines += _cells(["network", "variant", "top-1 paper", "top-1 here", "params", "w/o BN", "paper", "2 s.f. match",
                     "MACs", "builder MACs", "paper", "ms 1 thr", "ms default", "paper CPU ms"], rows)
    lines += [f"  {row['name']}: {row['published']['note']}" for row in document["lightweight"]
              if row["published"]["note"]]
    lines.append("  * the timed loop was judged unstable (other load on the machine, or rounds that disagree)")
    if document["resnet"]:
        first = document["resnet"][0]
        lines += ["", f"ResNet at batch {first['batch']}, {first['threads']} threads: ONNX Runtime FP32 vs INT8 "
                      "made here (QDQ, seeded calibration) beside TensorRT 4 on a TitanXp at batch 8; random weights, "
                      "so fidelity to FP32 in place of Top-1"]
        rows = []
        for row in document["resnet"]:
            paper, fidelity = row["published"], row["fidelity"] or {}
            rows.append([row["name"], significant(row["params"]), count(row["macs"]),
                         _ms(row["fp32_ms"], row["stability"]["fp32"]), _ms(row["int8_ms"], row["stability"]["int8"]),
                         f"{row['speedup']:.2f}x",
                         percent(fidelity.get("top1_agreement")), number(fidelity.get("cosine"), 4),
                         f"{paper['fp32_ms']}", f"{paper['int8_ms']}", f"{paper['fp32_ms'] / paper['int8_ms']:.2f}x",
                         f"{paper['fp32_top1']} -> {paper['int8_top1']}"])
        lines += _cells(["network", "params", "MACs", "fp32 ms", "int8 ms", "speed-up", "top-1 agree", "cosine",
                         "TRT fp32", "TRT int8", "TRT speed-up", "TRT top-1 %"], rows)
    return "\n".join(lines)
