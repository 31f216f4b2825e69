"""The zoo's networks against their published parameter counts (two significant figures) and their MACs
against the builder's own count; `edge-agent zoo` prints them, and times one on ONNX Runtime."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Tuple

import pytest
from support.cli import run_cli

from agent.jobs.zoo import counts, two_figures
from agent.profile.static import static_profile
from agent.zoo.published import LIGHTWEIGHT, Published

# name -> (params, params without BatchNorm's scale and shift, MACs), counted once and pinned here
EXACT: Dict[str, Tuple[int, int, int]] = {
    "MobileNet V1": (4_231_976, 4_210_088, 568_740_352),
    "ShuffleNet (1.5)": (3_442_168, 3_405_448, 292_443_552),
    "ShuffleNet (x2)": (5_450_776, 5_401_816, 524_045_184),
    "MobileNet V2": (3_504_872, 3_470_760, 300_774_272),
    "MobileNet V2 (1.4)": (6_108_776, 6_060_840, 582_195_824),
}
# which published figure our count meets to two significant figures (with or without BatchNorm's scale/shift)
MATCHES = {"MobileNet V1": 4.2, "ShuffleNet (1.5)": 3.4, "ShuffleNet (x2)": 5.4}


@pytest.mark.parametrize("entry", LIGHTWEIGHT, ids=lambda e: e.name)
def test_params_and_macs_against_the_paper_and_the_builder(entry: Published, tmp_path: Path) -> None:
    net = entry.build()
    path = tmp_path / "net.onnx"
    path.write_bytes(net.model(net.output).SerializeToString())
    found = counts(static_profile(path), net.macs)
    assert (found["params"], found["params_without_bn"], found["macs"]) == EXACT[entry.name]
    assert found["macs"] == found["builder_macs"]  # the profiler's count and the builder's own
    assert abs(found["macs"] / 1e6 - entry.macs_m) / entry.macs_m < 0.015  # 569 vs 575 M for V1, the rest < 0.5 %
    ours = {two_figures(found["params"] / 1e6), two_figures(found["params_without_bn"] / 1e6)}
    published = {entry.params_m, entry.revised_params_m} - {None}
    assert (ours & published) == ({MATCHES[entry.name]} if entry.name in MATCHES else set())


def test_the_zoo_table_marks_top1_and_what_matches() -> None:
    result = run_cli("zoo", "--static", "--json")
    assert result.code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()["lightweight"]}
    assert set(rows) == set(EXACT) and all(row["top1"] == "needs trained weights" for row in rows.values())
    assert rows["MobileNet V1"]["params_match"] and not rows["ShuffleNet (1.5)"]["params_match"]
    assert rows["ShuffleNet (1.5)"]["revised_match"] and not rows["MobileNet V2 (1.4)"]["params_match"]
    assert all(row["latency"] is None for row in rows.values())


def test_the_zoo_times_a_network_at_one_and_the_default_threads() -> None:
    result = run_cli("zoo", "--only", "MobileNet V2", "--warmup", "1", "--iterations", "3", "--min-seconds", "0")
    assert result.code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("MobileNet V2 "))
    cells = line.split()
    assert float(cells[-3].rstrip("*")) > 0 and float(cells[-2].rstrip("*")) > 0 and cells[-1] == "80"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_the_resnet_table_through_tensorrt_says_in_one_line_why_it_cannot_run_here() -> None:
    """The TensorRT table (scripts/jetson-selftest runs it on a Jetson) asks the tensorrt backend for both
    engines; where TensorRT is missing it stops at once with the backend's reason."""
    result = run_cli("zoo", "--resnet", "--backend", "tensorrt", "--only", "MobileNet V2", "--static")
    assert result.code == 6, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "tensorrt is unavailable" in result.stderr
