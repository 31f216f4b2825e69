"""`edge-agent compare BASELINE CANDIDATE` end to end: a model against itself, and against a smaller
digits classifier built here and bundled with the same labelled evaluation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.cli import QUICK, edit_manifest, run_cli

from agent.bundle import sha256_file
from agent.profile.static import static_profile


def small_digits(bundle: Path) -> Path:
    """Replaces a digits bundle's models with one ONNX file: Reshape to 64 pixels, then one Gemm to 10 logits."""
    weights = np.random.default_rng(0).normal(0, 0.1, (64, 10)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["image", "flat"], ["pixels"], name="flatten"),
             helper.make_node("Gemm", ["pixels", "w", "b"], ["logits"], name="classifier")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 8, 8, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(np.array([-1, 64], np.int64), "flat"),
                     numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = bundle / "model.fp32.onnx"
    path.write_bytes(model.SerializeToString())
    for name in ("model.fp32.tflite", "model.int8.tflite"):
        (bundle / name).unlink()

    def only_onnx(manifest: dict) -> None:
        manifest["models"] = [{"format": "onnx", "precision": "fp32", "path": path.name,
                               "sha256": sha256_file(path), "bytes": path.stat().st_size}]

    edit_manifest(bundle, only_onnx)
    return bundle


def test_a_model_against_itself_compresses_nothing(digits: Path) -> None:
    steady = ["--warmup", "20", "--iterations", "300", "--min-seconds", "0.2"]  # a p50 robust to short spikes
    result = run_cli("compare", str(digits), str(digits), "--json", *steady)
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["schema"] == "edge-agent/compare/1" and document["unpaired"] == []
    assert [row["baseline"]["label"] for row in document["pairs"]] == ["onnxruntime/fp32", "tflite/fp32",
                                                                        "tflite/int8"]
    for row in document["pairs"]:
        change = row["change"]
        assert change["param_compression"] == 1.0 and change["param_bytes_compression"] == 1.0
        assert change["macs_reduction"] == change["flops_reduction"] == change["mults_reduction"] == 0.0
        assert change["top1_delta"] == 0.0 and change["top5_delta"] == 0.0
        assert change["speedup"] == pytest.approx(row["baseline"]["p50_ms"] / row["candidate"]["p50_ms"], rel=1e-3)
        assert 1 / 3 < change["speedup"] < 3  # the same model twice: about 1, on a noisy shared machine
        assert row["baseline"]["params"] == 93_962 and row["baseline"]["top1"] >= 0.95
    int8 = document["pairs"][2]["baseline"]
    assert int8["param_bytes"] < document["pairs"][1]["baseline"]["param_bytes"] / 3


def test_a_smaller_candidate_reports_compression_speedup_and_accuracy_delta(digits: Path,
                                                                          digits_copy: Path) -> None:
    candidate = small_digits(digits_copy)
    result = run_cli("compare", str(digits), str(candidate), "--backend", "onnxruntime", "--json", *QUICK)
    assert result.code == 0, result.stderr
    (row,) = result.json()["pairs"]
    base, small, change = row["baseline"], row["candidate"], row["change"]
    totals = static_profile(digits / "model.fp32.onnx").totals()
    assert (small["params"], small["macs"]) == (650, 640)
    assert change["param_compression"] == pytest.approx(round(totals["params"] / 650, 4))
    assert change["macs_reduction"] == pytest.approx(round(1 - 640 / totals["macs"], 4))
    assert change["speedup"] == pytest.approx(base["p50_ms"] / small["p50_ms"], rel=1e-3)
    assert small["top1"] is not None and small["top1"] < base["top1"]  # random weights
    assert change["top1_delta"] == pytest.approx(small["top1"] - base["top1"], abs=1e-4)
    table = run_cli("compare", str(digits), str(candidate), "--backend", "onnxruntime", *QUICK)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[3].split()[:4] == ["configuration", "model", "params", "param"]
    change_row = lines[6].split()
    assert change_row[0] == "change" and change_row[1].endswith("x") and change_row[-1].endswith("pt")


def test_models_no_common_backend_runs_are_a_clear_error(digits: Path) -> None:
    result = run_cli("compare", str(digits / "model.fp32.onnx"), str(digits / "model.int8.tflite"), *QUICK)
    assert result.code == 1, result.stderr
    assert "nothing to compare" in result.stderr and "Traceback" not in result.stderr


def test_models_with_different_tensors_are_refused_unless_forced(digits: Path, mobilenet: Path) -> None:
    """MobileNetV2 (224x224x3 -> 1000) against digits (8x8x1 -> 10): no "speed-up" between unrelated nets."""
    refused = run_cli("compare", str(mobilenet), str(digits), "--backend", "tflite", *QUICK)
    lines = refused.stderr.strip().splitlines()
    assert refused.code == 2 and len(lines) == 1 and "does not take and give the same tensors" in lines[0]
    assert "(224, 224, 3)" in lines[0] and "(8, 8, 1)" in lines[0] and "--force" in lines[0]
    forced = run_cli("compare", str(mobilenet), str(digits), "--backend", "tflite", "--precision", "fp32",
                     "--force", "--json", *QUICK)
    assert forced.code == 0, forced.stderr
    assert forced.json()["pairs"][0]["change"]["speedup"] > 1


def test_each_row_is_labelled_with_its_own_precision(digits: Path) -> None:
    """An FP32 baseline paired with an INT8 candidate on one backend: the candidate row says int8."""
    table = run_cli("compare", str(digits / "model.fp32.tflite"), str(digits / "model.int8.tflite"), *QUICK)
    assert table.code == 0, table.stderr
    rows = {line.split()[1]: line.split()[0] for line in table.stdout.splitlines()
            if line.split()[1:2] in (["baseline"], ["candidate"])}  # a row with no label would start "candidate"
    assert rows == {"baseline": "tflite/fp32", "candidate": "tflite/int8"}
