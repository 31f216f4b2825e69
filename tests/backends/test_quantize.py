"""On-device precisions for ONNX Runtime: real quantization of the bundled models, real sessions."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from support.cli import QUICK, edit_manifest, run_cli

from agent.backends.build import MIN_CALIBRATION_SAMPLES, BuildSpec, CalibrationSet, batch_ranges
from agent.backends.quantize import METHODS, activation_type, cache_name, convert_fp16, quantize_int8
from agent.backends.registry import get_backend
from agent.bundle import open_model, sha256_file
from agent.measure.accuracy import topk_accuracy
from agent.measure.plan import MeasureRequest, derivations, plan


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache folder (workers inherit the variable)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGE_AGENT_CACHE_DIR", str(folder))
    return folder


def _top1(path: Path, bundle_path: Path) -> float:
    bundle = open_model(bundle_path)
    x, y = bundle.evaluation.load()
    feeds = bundle.preprocessing.apply(x, "NHWC")
    session = get_backend("onnxruntime").load(path, 1, get_backend("onnxruntime").validate_options({}))
    return topk_accuracy(session.run([feeds])[0], y)["top1"]


def test_int8_keeps_digits_top1_and_is_cached(digits: Path, cache: Path) -> None:
    calibration = CalibrationSet.from_bundle(open_model(digits))
    first = quantize_int8(digits / "model.fp32.onnx", calibration)
    assert first.precision == "int8" and first.path.is_file() and first.path.parent == cache / "quantized"
    assert first.details["method"] == "minmax" and first.details["format"] == "QDQ" and first.details["per_channel"]
    assert first.details["cache_hit"] is False and first.details["calibration_samples"] == 200
    assert first.warnings == []  # 200 samples is enough
    ops = {node.op_type for node in onnx.load(str(first.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    again = quantize_int8(digits / "model.fp32.onnx", calibration)
    assert again.path == first.path and again.details["cache_hit"] is True
    fp32, int8 = _top1(digits / "model.fp32.onnx", digits), _top1(first.path, digits)
    assert fp32 >= 0.95 and int8 >= fp32 - 0.01


@pytest.mark.parametrize("method", METHODS)
def test_every_calibration_method_makes_its_own_model(digits: Path, method: str) -> None:
    prepared = quantize_int8(digits / "model.fp32.onnx", CalibrationSet.from_bundle(open_model(digits)), method)
    assert f"-int8-cpu-{method}-" in prepared.path.name and prepared.details["method"] == method
    assert _top1(prepared.path, digits) >= 0.95


def test_the_tensorrt_flavour_is_symmetric_with_float_biases(digits: Path) -> None:
    """TensorRT's explicit INT8 takes zero points of 0 only, and no quantized (int32) biases."""
    calibration = CalibrationSet.from_bundle(open_model(digits))
    for_trt = quantize_int8(digits / "model.fp32.onnx", calibration, target="tensorrt")
    for_cpu = quantize_int8(digits / "model.fp32.onnx", calibration)
    assert for_trt.path != for_cpu.path and for_trt.details["activations"] == "int8"
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in onnx.load(str(for_trt.path)).graph.initializer}
    zero_points = [w for name, w in weights.items() if name.endswith("_zero_point")]
    assert zero_points and all(not zp.any() and zp.dtype == np.int8 for zp in zero_points)
    assert not any(w.dtype == np.int32 for w in weights.values())
    cpu_weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(for_cpu.path)).graph.initializer]
    assert any(w.dtype == np.int32 for w in cpu_weights)  # ONNX Runtime's own kernels take int32 biases
    # The graph is made for TensorRT; ONNX Runtime's CPU kernels only check that it is sane. Their signed
    # int8 x int8 path saturates on x86 without VNNI (seen on an AVX2-only AMD EPYC: 93.6 % against
    # 98.9 % on a Xeon with VNNI), so the bar is a broken-graph bar, not TensorRT's accuracy.
    assert _top1(for_trt.path, digits) >= 0.90


def test_a_damaged_cached_model_is_made_again(digits: Path) -> None:
    calibration = CalibrationSet.from_bundle(open_model(digits))
    first = quantize_int8(digits / "model.fp32.onnx", calibration)
    first.path.write_bytes(b"truncated")
    again = quantize_int8(digits / "model.fp32.onnx", calibration)
    assert again.details["cache_hit"] is False and sha256_file(again.path) == again.details["sha256"]


def test_a_small_calibration_set_warns_with_its_count(digits_copy: Path) -> None:
    with np.load(digits_copy / "calibration.npz") as data:
        np.savez(digits_copy / "calibration.npz", x=data["x"][:20])

    def shrink(manifest: dict) -> None:
        manifest["data"]["calibration"].update(sha256=sha256_file(digits_copy / "calibration.npz"), samples=20)
    edit_manifest(digits_copy, shrink)
    prepared = quantize_int8(digits_copy / "model.fp32.onnx", CalibrationSet.from_bundle(open_model(digits_copy)))
    assert prepared.details["calibration_samples"] == 20
    assert prepared.warnings == [f"the calibration set has only 20 samples (fewer than {MIN_CALIBRATION_SAMPLES}): "
                                 "INT8 ranges may not represent real inputs"]


def test_calibration_data_is_preprocessed_like_evaluation_data(digits: Path, mobilenet: Path) -> None:
    samples = CalibrationSet.from_bundle(open_model(digits)).load()
    assert samples.shape == (200, 8, 8, 1) and samples.dtype == np.float32
    assert 0.0 <= samples.min() < samples.max() <= 1.0  # pixels 0..16 scaled by 1/16
    images = CalibrationSet.from_bundle(open_model(mobilenet)).load()
    assert images.shape == (16, 224, 224, 3) and -1.0 <= images.min() < images.max() <= 1.0


def test_calibration_set_travels_to_the_worker_as_json(mobilenet: Path) -> None:
    calibration = CalibrationSet.from_bundle(open_model(mobilenet))
    assert CalibrationSet.from_dict(calibration.to_dict()) == calibration
    assert CalibrationSet.from_dict(None) is None


@pytest.mark.parametrize("samples, batch, expected", [
    (200, 8, [(i, i + 8) for i in range(0, 200, 8)]),
    (20, 8, [(0, 8), (8, 16)]),  # the remainder is left out: a calibrator's batch shape is fixed
    (5, 8, [(0, 5)]),  # fewer than one batch: one batch of them all
    (0, 8, []),
])
def test_calibration_batches(samples: int, batch: int, expected: List[tuple]) -> None:
    assert batch_ranges(samples, batch) == expected


def test_activation_type_follows_the_target() -> None:
    assert activation_type("x86_64", "cpu") == "uint8"  # ORT's fast U8S8 path on x86 (VNNI)
    assert activation_type("aarch64", "cpu") == "int8"
    assert activation_type("x86_64", "tensorrt") == "int8"  # TensorRT takes symmetric int8 only


def test_cache_name_changes_with_everything_that_changes_the_result() -> None:
    args = ["a" * 64, "minmax", "cpu", "uint8", "c" * 64, "1.32.0"]
    changed = ["b" * 64, "entropy", "tensorrt", "int8", "d" * 64, "1.19.2"]
    base = cache_name(*args)
    for index, value in enumerate(changed):
        assert cache_name(*(args[:index] + [value] + args[index + 1:])) != base


def test_fp16_conversion_keeps_float32_inputs(digits: Path) -> None:
    prepared = convert_fp16(digits / "model.fp32.onnx")
    model = onnx.load(str(prepared.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert prepared.details["cache_hit"] is False and convert_fp16(digits / "model.fp32.onnx").details["cache_hit"]


def test_onnxruntime_offers_int8_from_fp32_onnx_only(digits: Path) -> None:
    ort, bundle = get_backend("onnxruntime"), open_model(digits)
    by_key = {m.key: m for m in bundle.models}
    assert ort.derived_precisions(by_key["onnx/fp32"]) == ("int8",)  # no GPU provider here: no fp16
    assert ort.derived_precisions(by_key["tflite/fp32"]) == ()
    assert ort.variants("int8", [1, 2]) == [(1, {"provider": "CPUExecutionProvider"}),
                                            (2, {"provider": "CPUExecutionProvider"})]
    assert ort.variants("fp16", [1, 2]) == []
    assert ort.prepare(digits / "model.fp32.onnx", BuildSpec(), ort.validate_options({})) is None


def test_plan_derives_int8_only_when_asked_and_only_with_calibration_data(digits: Path, digits_copy: Path) -> None:
    bundle = open_model(digits)
    labels = [c.label for c in plan(bundle, MeasureRequest(str(digits), backends=["onnxruntime"]))]
    assert labels == ["onnxruntime/fp32"]
    derived = plan(bundle, MeasureRequest(str(digits), backends=["onnxruntime"], derive=True))
    assert [c.label for c in derived] == ["onnxruntime/fp32", "onnxruntime/int8"] and derived[1].derived == "int8"
    edit_manifest(digits_copy, lambda m: m["data"].pop("calibration"))
    plain = open_model(digits_copy)
    skipped = [(c.label, reason) for c, reason in derivations(plain, [get_backend("onnxruntime")])]
    assert skipped == [("onnxruntime/int8", "INT8 skipped: the bundle has no calibration data "
                                            "(data.calibration in manifest.json)")]


def test_bench_derive_reports_method_and_cache_hit(digits: Path) -> None:
    args = ("bench", str(digits), "--backend", "onnxruntime", "--derive", "--json", *QUICK)
    first, second = run_cli(*args), run_cli(*args)
    assert first.code == 0 and second.code == 0, first.stderr + second.stderr
    reports = {r["model"]["precision"]: r for r in first.json()}
    build = reports["int8"]["backend"]["configuration"]["build"]
    assert build["method"] == "minmax" and build["cache_hit"] is False and build["calibration_samples"] == 200
    assert reports["int8"]["model"]["sha256"] == reports["fp32"]["model"]["sha256"]  # made from the FP32 file
    assert reports["int8"]["accuracy"]["top1"] >= reports["fp32"]["accuracy"]["top1"] - 0.01
    assert reports["int8"]["fidelity"]["reference"] == "onnxruntime/fp32 (onnx)"
    again = {r["model"]["precision"]: r for r in second.json()}
    assert again["int8"]["backend"]["configuration"]["build"]["cache_hit"] is True


def test_bench_derive_without_calibration_data_says_why(digits_copy: Path) -> None:
    edit_manifest(digits_copy, lambda m: m["data"].pop("calibration"))
    (digits_copy / "calibration.npz").unlink()
    result = run_cli("bench", str(digits_copy), "--backend", "onnxruntime", "--derive", "--precision", "int8")
    assert result.code == 6 and "INT8 skipped: the bundle has no calibration data" in result.stderr
