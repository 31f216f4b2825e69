"""`edge-agent compress lowrank --sweep`: one model per energy, each measured, as a table, JSON and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_cli

from agent.profile.static import static_profile

QUICK = ["--warmup", "1", "--iterations", "5", "--min-seconds", "0"]


def test_a_sweep_writes_measures_and_draws_each_energy(digits: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    out = tmp_path / "sweep"
    result = run_cli("compress", "lowrank", str(digits), "--sweep", "0.5,0.9", "--plot", "-o", str(out), *QUICK)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].split()[:4] == ["energy", "layers", "top-1", "top-5"]
    assert [line.split()[0] for line in lines[3:]] == ["original", "0.5", "0.9"]
    document = json.loads((out / "sweep.json").read_text())
    assert (out / "sweep.txt").read_text().strip() == result.stdout.strip()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    base = document["baseline"]
    low, high = document["points"]
    assert base["top1"] >= 0.95 and low["figures"]["top1"] < high["figures"]["top1"] <= base["top1"]
    for point in (low, high):
        totals = static_profile(Path(point["model"]) / "model.fp32.onnx").totals()
        assert point["figures"]["macs"] == totals["macs"] < base["macs"]
        assert point["change"]["param_compression"] == pytest.approx(round(base["params"] / totals["params"], 4))
        assert point["change"]["speedup"] == pytest.approx(base["p50_ms"] / point["figures"]["p50_ms"], rel=1e-3)
        assert point["factorised"] == 4
    assert low["change"]["param_compression"] > high["change"]["param_compression"] > 1


def test_a_sweep_is_the_rank_rule(digits: Path, tmp_path: Path) -> None:
    both = run_cli("compress", "lowrank", str(digits), "--sweep", "0.5", "--energy", "0.9", "-o", str(tmp_path / "x"))
    assert both.code == 2 and "--sweep is the rank rule" in both.stderr
    outside = run_cli("compress", "lowrank", str(digits), "--sweep", "0.5,1.5")
    assert outside.code == 2 and "kept energies in (0, 1]" in outside.stderr
    lonely = run_cli("compress", "lowrank", str(digits), "--energy", "0.9", "--plot", "-o", str(tmp_path / "y"))
    assert lonely.code == 2 and "--plot draws a sweep" in lonely.stderr and not (tmp_path / "y").exists()
