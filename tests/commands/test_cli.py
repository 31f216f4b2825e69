"""`edge-agent` end to end, as a user runs it: a real process, real runtimes, the bundled models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.cli import QUICK, edit_manifest, run_cli

REPORT_KEYS = {"schema", "kind", "created", "status", "device", "model", "backend", "latency", "memory", "thermal",
               "accuracy", "fidelity"}
LATENCY_KEYS = {"load_ms", "first_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms",
                "max_ms", "iterations", "throughput_per_s"}


def _line(text: str, start: str) -> str:
    """The first line of `text` that begins with `start` ('' when none does)."""
    return next((line for line in text.splitlines() if line.startswith(start)), "")


def _one_line_error(result, code: int, text: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_bench_digits_reports_every_backend_and_precision(digits: Path, tmp_path: Path) -> None:
    output = tmp_path / "reports.json"
    result = run_cli("bench", str(digits), "--json", "--output", str(output), *QUICK)
    assert result.code == 0, result.stderr
    reports = {f"{r['backend']['name']}/{r['model']['precision']}": r for r in result.json()}
    assert set(reports) == {"onnxruntime/fp32", "tflite/fp32", "tflite/int8"}
    assert json.loads(output.read_text()) == result.json()
    for report in reports.values():
        assert set(report) >= REPORT_KEYS and report["schema"] == "edge-agent/report/1"
        assert report["status"] == "ok" and set(report["latency"]) >= LATENCY_KEYS
        assert report["latency"]["iterations"] >= 5 and report["latency"]["p50_ms"] > 0
        assert report["model"]["sha256"] and report["backend"]["version"]
        assert report["accuracy"]["samples"] == 450 and report["memory"]["peak_rss_mb"] > 0
    fp32 = reports["onnxruntime/fp32"]["accuracy"]["top1"]
    assert fp32 >= 0.95
    assert reports["tflite/int8"]["accuracy"]["top1"] >= fp32 - 0.01
    twin = reports["tflite/fp32"]["fidelity"]
    assert twin["top1_agreement"] == 1.0 and twin["cosine"] >= 0.9999
    assert twin["reference"] == "onnxruntime/fp32 (onnx)"
    assert reports["onnxruntime/fp32"]["fidelity"] is None  # the reference itself


def test_bench_table_is_the_default(digits: Path) -> None:
    result = run_cli("bench", str(digits), "--backend", "tflite", "--precision", "int8", *QUICK)
    assert result.code == 0, result.stderr
    header, row = result.stdout.splitlines()[2:4]
    assert header.split()[:4] == ["backend", "version", "format", "prec"]
    fields = row.split()  # the version cell names the package: "ai-edge-litert 2.3.0"
    assert fields[0] == "tflite" and fields[fields.index("tflite", 1) + 1] == "int8"


def test_eval_judges_without_timing(digits: Path) -> None:
    result = run_cli("eval", str(digits), "--json", "--eval-limit", "100")
    assert result.code == 0, result.stderr
    for report in result.json():
        assert report["kind"] == "eval" and report["latency"] is None
        assert report["accuracy"]["samples"] == 100


def test_bench_mobilenet_with_int8_reference_run(mobilenet: Path) -> None:
    """Benching INT8 alone still judges fidelity: the FP32 reference runs for its outputs only."""
    result = run_cli("bench", str(mobilenet), "--precision", "int8", "--json", *QUICK)
    assert result.code == 0, result.stderr
    (report,) = result.json()
    assert report["inputs"][0]["resolved_shape"] == [1, 224, 224, 3]
    assert report["accuracy"] is None  # random weights, unlabelled data
    assert report["fidelity"]["samples"] > 0 and report["fidelity"]["reference"].startswith("onnxruntime/fp32")


def test_info_lists_the_board_and_every_runtime() -> None:
    result = run_cli("info", "--json")
    assert result.code == 0, result.stderr
    info = result.json()
    assert info["schema"] == "edge-agent/info/1" and info["device"]["fingerprint"]
    runtimes = {r["name"]: r for r in info["runtimes"]}
    assert runtimes["onnxruntime"]["available"] and not runtimes["tensorrt"]["available"]
    assert "tensorrt: unavailable: tensorrt: not installed" in run_cli("info").stdout


def _plain_onnx(path: Path, inputs, outputs, nodes) -> Path:
    graph = helper.make_graph(nodes, "authored", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_model_from_elsewhere_benches_with_its_own_input_names(tmp_path: Path) -> None:
    """Two inputs named as an author might (a colon, a dynamic batch, a scalar gain fed from a file)."""
    model = _plain_onnx(
        tmp_path / "authored.onnx",
        [helper.make_tensor_value_info("pixel_values:0", TensorProto.FLOAT, ["batch", 3, 4, 4]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_node("Mul", ["pixel_values:0", "gain"], ["scaled"])])
    gain = tmp_path / "gain.npy"
    np.save(gain, np.array(2.0, dtype=np.float32))
    result = run_cli("bench", str(model), "--input", f"gain={gain}", "--batch", "2,4", "--json", *QUICK)
    assert result.code == 0, result.stderr
    (report,) = result.json()
    assert [i["resolved_shape"] for i in report["inputs"]] == [[2, 3, 4, 4], []]
    assert [b["batch"] for b in report["latency_by_batch"]] == [2, 4]
    assert report["model"]["precision"] == "fp32" and report["model"]["bundle"] is None


def test_dynamic_dimensions_need_a_shape(tmp_path: Path) -> None:
    model = _plain_onnx(
        tmp_path / "dynamic.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_node("Relu", ["x"], ["y"])])
    _one_line_error(run_cli("bench", str(model), *QUICK), 7, "input 'x' dimension 2 ('h') is not fixed")
    result = run_cli("bench", str(model), "--shape", "x=1,3,32,48", "--json", *QUICK)
    assert result.code == 0 and result.json()[0]["inputs"][0]["resolved_shape"] == [1, 3, 32, 48]


def test_plain_tflite_precision_is_read_from_the_file(tmp_path: Path, digits: Path) -> None:
    plain = tmp_path / "quantized.tflite"
    plain.write_bytes((digits / "model.int8.tflite").read_bytes())
    result = run_cli("bench", str(plain), "--json", *QUICK)
    assert result.code == 0, result.stderr
    assert result.json()[0]["model"]["precision"] == "int8"


def test_bundle_inputs_answer_to_their_manifest_names(digits: Path) -> None:
    result = run_cli("bench", str(digits), "--backend", "onnxruntime", "--shape", "image=1,8,8,1", "--json", *QUICK)
    assert result.code == 0, result.stderr
    assert result.json()[0]["inputs"][0]["bundle_name"] == "image"


def test_missing_path(tmp_path: Path) -> None:
    _one_line_error(run_cli("bench", str(tmp_path / "nope.onnx")), 3, "model not found")


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    text = tmp_path / "readme.txt"
    text.write_text("not a model")
    _one_line_error(run_cli("bench", str(text)), 4, "is not a model")


@pytest.mark.parametrize("name, text", [("model.fp32.onnx", "ONNX Runtime cannot load model.fp32.onnx"),
                                        ("model.fp32.tflite", "model.fp32.tflite is truncated or corrupt")])
def test_truncated_model_file(tmp_path: Path, digits: Path, name: str, text: str) -> None:
    truncated = tmp_path / name
    truncated.write_bytes((digits / name).read_bytes()[:3000])
    _one_line_error(run_cli("bench", str(truncated), *QUICK), 4, text)


def test_wrong_hash_in_manifest(digits_copy: Path) -> None:
    edit_manifest(digits_copy, lambda m: m["models"][1].__setitem__("sha256", "0" * 64))
    _one_line_error(run_cli("bench", str(digits_copy)), 5, "sha256 mismatch for model.fp32.tflite")


def test_manifest_missing_a_field(digits_copy: Path) -> None:
    edit_manifest(digits_copy, lambda m: m.pop("inputs"))
    _one_line_error(run_cli("bench", str(digits_copy)), 5, "missing field 'inputs'")


def test_input_shape_that_does_not_match(digits: Path) -> None:
    _one_line_error(run_cli("bench", str(digits), "--backend", "onnxruntime", "--shape", "image=1,8,9,1", *QUICK),
                    7, "dimension 2 is fixed to 8 by the model, 9 was given")


def test_backend_that_is_not_installed(tmp_path: Path, digits: Path) -> None:
    """ONNX Runtime is installed here, so a missing install is simulated: a package on PYTHONPATH that
    shadows it and fails to import, as a broken or absent wheel would."""
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    result = run_cli("bench", str(digits), "--backend", "onnxruntime", env={"PYTHONPATH": str(shadow.parent)})
    _one_line_error(result, 6, "backend onnxruntime is unavailable: onnxruntime not installed")


@pytest.mark.parametrize("args, text", [
    (["--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["--warmup", "lots"], "--warmup takes"),
    (["--option", "turbo=1"], "no backend being run has an option 'turbo'"),
    (["--precision", "fp16"], "has no model in precision fp16"),
])
def test_usage_errors(digits: Path, args, text: str) -> None:
    _one_line_error(run_cli("bench", str(digits), *args), 2, text)


def test_eval_needs_a_bundle(digits: Path) -> None:
    _one_line_error(run_cli("eval", str(digits / "model.fp32.onnx")), 2, "eval needs a bundle")


def _onnx_package_models() -> list:
    """Real architectures (with trimmed weights) shipped inside the onnx package's backend test data."""
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return [light / f"light_{name}.onnx" for name in ("squeezenet", "shufflenet", "resnet50", "densenet121")]


@pytest.mark.parametrize("model", _onnx_package_models(), ids=lambda p: p.stem)
def test_models_from_elsewhere_bench_without_edits(model: Path) -> None:
    """Files written by other people's exporters, inputs named as their authors chose (`gpu_0/data_0`)."""
    result = run_cli("bench", str(model), "--json", *QUICK)
    assert result.code == 0, result.stderr
    (report,) = result.json()
    assert report["status"] == "ok" and report["latency"]["p50_ms"] > 0
    assert report["inputs"][0]["resolved_shape"] == [1, 3, 224, 224]


@pytest.mark.parametrize("args, text", [
    (["bench", "models/digits", "--threads", "0"], "edge-agent bench: error: argument --threads: expected a positive"),
    (["bench"], "edge-agent bench: error: the following arguments are required: model"),
    (["frob"], "edge-agent: error: argument COMMAND: invalid choice: 'frob'"),
])
def test_an_argparse_rejection_is_one_line_with_exit_code_2(args: List[str], text: str) -> None:
    result = run_cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith(text), result.stderr
    assert lines[0].endswith("--help)") and result.stdout == ""


def test_more_threads_than_cores_is_refused_unless_asked_for(digits: Path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    refused = run_cli("bench", str(digits), "--backend", "tflite", "--threads", str(cores + 1), *QUICK)
    _one_line_error(refused, 2, f"{cores + 1} threads is more than the {cores} CPUs")
    allowed = run_cli("bench", str(digits), "--backend", "tflite", "--precision", "fp32", "--threads",
                      str(cores + 1), "--allow-oversubscribe", "--json", *QUICK)
    assert allowed.code == 0, allowed.stderr
    assert allowed.json()[0]["backend"]["configuration"]["threads"] == cores + 1


def test_a_runtime_is_named_with_the_package_it_came_from(digits: Path) -> None:
    """TFLite's version is its package's (ai-edge-litert 2.3, tflite-runtime 2.14), not TensorFlow's."""
    table = run_cli("bench", str(digits), "--backend", "tflite", "--precision", "fp32", *QUICK)
    info = run_cli("info")
    assert table.code == 0 and info.code == 0, table.stderr + info.stderr
    package = next(word for word in ("ai-edge-litert", "tflite-runtime") if word in table.stdout)
    assert f"tflite: {package} " in info.stdout


def test_fidelity_names_its_reference_and_sample_count_and_flags_a_weak_verdict(digits: Path) -> None:
    weak = run_cli("bench", str(digits), "--backend", "tflite", "--eval-limit", "8", *QUICK)
    strong = run_cli("bench", str(digits), "--backend", "tflite", "--eval-limit", "40", *QUICK)
    assert weak.code == 0 and strong.code == 0, weak.stderr + strong.stderr
    reference = "agree, cosine: vs onnxruntime/fp32 (onnx), "  # the ONNX FP32 file judges every configuration
    assert _line(weak.stdout, reference) == reference + "8 samples (fewer than 30: weak)"
    assert "(8, weak)" in weak.stdout
    assert _line(strong.stdout, reference) == reference + "40 samples"
    assert "weak" not in strong.stdout


def test_csv_has_one_row_per_configuration_with_every_statistic(digits: Path) -> None:
    import csv
    import io

    table = run_cli("bench", str(digits), "--backend", "onnxruntime,tflite", "--csv", *QUICK)
    assert table.code == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["label"] for r in rows] == ["onnxruntime/fp32", "tflite/fp32", "tflite/int8"]
    for row in rows:
        low, median, tail, high = (float(row[k]) for k in ("min_ms", "p50_ms", "p99_9_ms", "max_ms"))
        assert 0 < low <= median <= tail <= high and float(row["cov"]) >= 0
        assert row["stability"] in ("stable", "unstable", "unknown") and row["status"] == "ok"
        assert row["iterations"] == "6" and len(row["round_p50_ms"].split()) == 3  # 5 calls in 3 rounds: 2 each


def test_export_times_holds_every_timed_call_of_every_configuration(digits: Path, tmp_path: Path) -> None:
    exported = tmp_path / "times.json"
    result = run_cli("bench", str(digits), "--backend", "tflite", "--batch", "1,4", "--rounds", "2", "--json",
                     "--export-times", str(exported), *QUICK)
    assert result.code == 0, result.stderr
    times = json.loads(exported.read_text())
    reports = result.json()
    assert [(t["configuration"], t["batch"]) for t in times] == [
        (r["backend"]["name"] + "/" + r["model"]["precision"], b) for r in reports for b in (1, 4)]
    for entry, summary in zip(times, [s for r in reports for s in r["latency_by_batch"]]):
        runs = entry["runs"]
        assert len(runs) == summary["iterations"] and {r["round"] for r in runs} == {0, 1}
        assert runs[0]["startMs"] == 0.0 and all(a["endMs"] <= b["startMs"] for a, b in zip(runs, runs[1:]))
        latencies = sorted(r["latencyMs"] for r in runs)
        assert latencies[0] == pytest.approx(summary["min_ms"]) and latencies[-1] == pytest.approx(summary["max_ms"])
