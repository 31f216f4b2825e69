"""PNG charts of a profile (the `plot` extra): the roofline with every layer on it, and time vs MACs per layer.

matplotlib is imported here only, with the non-interactive Agg backend, so a headless board draws.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.errors import UsageError
from agent.profile.render import ordered_layers, short

BAR_LAYERS = 30


def require_matplotlib() -> Any:
    """The pyplot module, or a `UsageError` naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'edge-agent[plot]'") from None
    return pyplot


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def roofline_chart(pyplot: Any, section: Dict[str, Any], title: str, path: Path) -> Optional[Path]:
    """Attained GFLOP/s against FLOPs per byte, under every ceiling the layers were judged by (each
    runtime/precision's compute peak, each memory level's bandwidth); None without peaks or layers."""
    roof = section.get("roofline")
    # a head's rates are its fused group's: its intensity is GFLOP/s over GB/s, not the layer's own
    points = [(r["achieved_gflops"] / r["achieved_gbs"], r["achieved_gflops"]) for r in section["layers"]
              if r.get("achieved_gflops") and r.get("achieved_gbs")]
    if not roof:
        return None
    if not points:  # a static profile: place layers at their intensity on the roof itself
        points = [(r["intensity"], min(roof["gflops"], r["intensity"] * roof["gbs"]))
                  for r in section["layers"] if r.get("intensity") and r.get("fused_into") is None]
    if not points:
        return None
    figure, axes = pyplot.subplots(figsize=(8, 5))
    ridges = [g / m["gbs"] for g in roof["compute"].values() for m in roof["memory"]]
    low = min(min(x for x, _ in points), *ridges) / 4
    high = max(max(x for x, _ in points), *ridges) * 4
    top = max(roof["compute"].values())
    for level in roof["memory"]:  # each level's bandwidth, up to the highest compute ceiling
        axes.loglog([low, top / level["gbs"]], [low * level["gbs"], top], linestyle="--", linewidth=1,
                    label=f"{level['name']} {level['gbs']:.3g} GB/s")
    for label, gflops in roof["compute"].items():
        axes.loglog([low, high], [gflops, gflops], linewidth=1.5, label=f"{label} {gflops:.3g} GFLOP/s")
    axes.scatter([x for x, _ in points], [y for _, y in points], s=14, alpha=0.7, color="black", label="layers")
    axes.set_xlim(low, high)
    axes.set_xlabel("arithmetic intensity (FLOPs / byte)")
    axes.set_ylabel("GFLOP/s")
    axes.set_title(f"{title} ({roof['ceiling']})")
    axes.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def time_and_macs_chart(pyplot: Any, section: Dict[str, Any], title: str, path: Path) -> Path:
    """Bars per layer (the costliest, in execution order): measured ms, and MACs beside them."""
    chosen = {r["name"] for r in ordered_layers(section, BAR_LAYERS)}
    rows: List[Dict[str, Any]] = [r for r in section["layers"] if r["name"] in chosen]
    figure, (time_axes, macs_axes) = pyplot.subplots(1, 2, figsize=(12, max(4, 0.28 * len(rows) + 1.5)),
                                                     sharey=True)
    labels = [short(r["name"], 36) for r in rows]
    positions = list(range(len(rows)))
    time_axes.barh(positions, [r.get("measured_ms") or 0 for r in rows], color="tab:blue")
    time_axes.set_xlabel("measured ms" if any(r.get("measured_ms") for r in rows) else "measured ms (not run)")
    macs_axes.barh(positions, [(r.get("macs") or 0) / 1e6 for r in rows], color="tab:orange")
    macs_axes.set_xlabel("MMACs")
    time_axes.set_yticks(positions)
    time_axes.set_yticklabels(labels, fontsize=7)
    time_axes.invert_yaxis()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def write_plots(reports: List[Any], folder: Path) -> List[Path]:
    """Both charts for every profiled report into `folder`; the files written."""
    pyplot = require_matplotlib()
    folder.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for report in reports:
        section = report.profile or {}
        if "layers" not in section:
            continue
        stem = _slug(f"{report.model.get('name')}-{report.backend.get('name') or 'static'}-"
                     f"{report.model.get('precision')}-{report.model.get('format')}")
        title = f"{report.model.get('name')} {report.model.get('precision')} ({report.backend.get('name') or 'static'})"
        chart = roofline_chart(pyplot, section, title, folder / f"{stem}-roofline.png")
        written += [chart] if chart else []
        written.append(time_and_macs_chart(pyplot, section, title, folder / f"{stem}-layers.png"))
    return written
