"""The accuracy–speed-up chart of a sweep (the `plot` extra; matplotlib through agent.profile.plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from agent.profile.plot import require_matplotlib


def sweep_chart(document: Dict[str, Any], path: Path) -> Path:
    """Top-1 against the measured speed-up and against the MACs left, one point per energy, the original at 1x."""
    pyplot = require_matplotlib()
    rows = [row for row in document["points"] if row["change"]["speedup"] is not None]
    top1 = [100 * (row["figures"]["top1"] or 0) for row in rows]
    base = 100 * (document["baseline"]["top1"] or 0)
    figure, (measured, counted) = pyplot.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    measured.plot([row["change"]["speedup"] for row in rows], top1, marker="o")
    counted.plot([1 / (1 - row["change"]["macs_reduction"]) for row in rows], top1, marker="o", color="tab:orange")
    for axes in (measured, counted):
        axes.scatter([1.0], [base], color="black", zorder=3, label="original")
        axes.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axes.grid(True, alpha=0.3)
    for row, accuracy in zip(rows, top1):
        measured.annotate(f"E={row['energy']:g}", (row["change"]["speedup"], accuracy), fontsize=8,
                          textcoords="offset points", xytext=(4, 4))
        counted.annotate(f"E={row['energy']:g}", (1 / (1 - row["change"]["macs_reduction"]), accuracy),
                         fontsize=8, textcoords="offset points", xytext=(4, 4))
    measured.set_xlabel("measured speed-up (p50 original / p50 factorised, x)")
    counted.set_xlabel("MACs original / MACs factorised (x)")
    measured.set_ylabel("Top-1 (%)")
    measured.legend(loc="lower left")
    figure.suptitle(f"low-rank sweep: {Path(document['model']).name} ({document['conv']}), "
                    f"{document['device'].get('summary', '')}", fontsize=9)
    figure.tight_layout()
    figure.savefig(str(path), dpi=110)
    pyplot.close(figure)
    return path
