"""The bundled models against this board's own measured ceilings: no figure above 100% goes unflagged.

A real `edge-agent profile` of every configuration of models/digits and models/mobilenet_v2 (ONNX
Runtime FP32, TFLite FP32 and INT8), with a fresh peaks cache: the ceilings are measured here with the
runtimes' kernels and every memory level, re-checked when a layer beats them. Whatever the figures,
each layer and whole model is either at most 100% of its roof or carries `peak_under_measured`, and
the table prints the flag beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import pytest
from support.cli import QUICK, run_cli

FRACTION = re.compile(r"(\d+(?:\.\d+)?)% of roof( \(peak under-measured\))?")


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    return {"EDGE_AGENT_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.parametrize("bundle", ["digits", "mobilenet_v2"])
def test_no_bundled_configuration_is_above_its_roof_unflagged(bundle: str, fresh_cache: Dict[str, str],
                                                              tmp_path: Path) -> None:
    output = tmp_path / "reports.json"
    result = run_cli("profile", f"models/{bundle}", "--top", "200", "--output", str(output), *QUICK, env=fresh_cache)
    assert result.code == 0, result.stderr
    reports: List[dict] = json.loads(output.read_text())
    assert {(r["backend"]["name"], r["model"]["precision"]) for r in reports} >= {
        ("onnxruntime", "fp32"), ("tflite", "fp32"), ("tflite", "int8")}
    for report in reports:
        profile = report["profile"]
        runtime, precision = report["backend"]["name"], report["model"]["precision"]
        whole = profile["measured"]["whole_model"]
        assert whole["roof_fraction"] > 0
        assert whole["roof_fraction"] <= 1.0 or whole["peak_under_measured"], (runtime, precision, whole)
        judged = [layer for layer in profile["layers"] if layer["ceiling"]]
        for layer in judged:
            fraction = layer["roof_fraction"]
            assert fraction is None or fraction <= 1.0 or layer["peak_under_measured"], layer
        compute = {layer["ceiling"] for layer in judged if layer["bound"] == "compute"}
        assert f"{runtime}/{precision} compute" in compute  # the runtime's own roof at the file's precision
        memory = {layer["ceiling"] for layer in judged if layer["bound"] == "memory"}
        assert memory and memory <= {"L1 bandwidth", "L2 bandwidth", "L3 bandwidth", "DRAM bandwidth"}
    # the table: every percentage above 100 says the peak was under-measured
    shown = FRACTION.findall(result.stdout)
    assert len(shown) >= len(reports)
    assert all(float(value) <= 100.0 or flag for value, flag in shown), shown
