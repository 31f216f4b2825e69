"""The TensorRT backend where no GPU is needed (version dispatch, cache keys and their validation,
shape profiles, parser messages, log levels, layer times, status reasons), and the real path where
TensorRT runs (marked `tensorrt`/`gpu`: skipped here with the reason the backend gives)."""

from __future__ import annotations

import enum
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.capability import needs_tensorrt
from support.cli import ROOT

from agent.backends.build import BuildSpec, CalibrationSet
from agent.backends.registry import get_backend
from agent.backends.tensorrt.support import (
    EngineRecipe,
    LayerTimes,
    ParserIssue,
    TrtApi,
    cached_engine,
    engine_meta,
    engine_paths,
    log_level,
    parse_version,
    parser_message,
    profile_tuple,
    shape_profile,
    version_mismatch,
)
from agent.bundle import open_model, sha256_file
from agent.cache import write_json
from agent.device.detect import device_section
from agent.errors import InputSpecError, ModelFormatError
from agent.report import Report
from agent.selection.race import rejection


@pytest.mark.parametrize("text, expected", [("8.5.2.2", (8, 5, 2, 2)), ("10.3.0", (10, 3, 0)),
                                            ("8.6.1.post1", (8, 6, 1))])
def test_parse_version(text: str, expected: tuple) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("version, named, pools, explicit_flag, implicit, typed", [
    ("8.4.1", False, True, True, True, False),  # JetPack 5.0.2: bindings, memory pools
    ("8.5.2.2", True, True, True, True, False),  # JetPack 5.1: execute_async_v3 arrives
    ("8.6.1", True, True, True, True, False),
    ("10.3.0.30", True, True, False, True, False),  # JetPack 6: bindings gone, EXPLICIT_BATCH ignored
    ("11.0.0", True, True, False, False, True),  # strongly typed, no implicit INT8
])
def test_version_dispatch(version: str, named: bool, pools: bool, explicit_flag: bool, implicit: bool,
                          typed: bool) -> None:
    api = TrtApi(parse_version(version))
    assert (api.named_tensors, api.memory_pools, api.explicit_batch_flag, api.implicit_int8, api.strongly_typed) == \
        (named, pools, explicit_flag, implicit, typed)
    assert api.int8_mode("auto") == ("entropy" if implicit else "qdq")
    assert api.int8_mode("qdq") == "qdq"


def test_implicit_int8_is_refused_where_it_was_removed() -> None:
    with pytest.raises(ValueError, match="TensorRT 11 removed implicit INT8 calibration"):
        TrtApi((11, 0)).int8_mode("entropy")


def _recipe(**changes: object) -> EngineRecipe:
    fields = dict(precision="fp16", profile=profile_tuple({"image": ((1, 8, 8, 1), (1, 8, 8, 1), (4, 8, 8, 1))}))
    fields.update(changes)
    return EngineRecipe(**fields)  # type: ignore[arg-type]


def test_engine_key_changes_with_everything_that_changes_the_engine() -> None:
    base = _recipe().key("a" * 64, "Orin sm87")
    variants = [_recipe().key("b" * 64, "Orin sm87"), _recipe().key("a" * 64, "Xavier sm72"),
                _recipe(precision="int8", int8_mode="entropy").key("a" * 64, "Orin sm87"),
                _recipe(dla_core=0).key("a" * 64, "Orin sm87"), _recipe(workspace_mb=256).key("a" * 64, "Orin sm87"),
                _recipe(profile=()).key("a" * 64, "Orin sm87"),
                _recipe(int8_mode="entropy", calibration_sha256="c" * 64).key("a" * 64, "Orin sm87")]
    paths = {engine_paths(Path("/c"), key)[0] for key in [base] + variants}
    assert len(paths) == 1 + len(variants)
    assert engine_paths(Path("/c"), base) == engine_paths(Path("/c"), _recipe().key("a" * 64, "Orin sm87"))
    assert json.loads(json.dumps(base)) == base  # stored as JSON beside the engine


def _cache_engine(folder: Path, key: dict, version: str) -> Path:
    engine, meta = engine_paths(folder, key)
    engine.write_bytes(b"serialized engine of " + version.encode())
    write_json(meta, engine_meta(key, version, sha256_file(engine), 12.5))
    return engine


def test_an_engine_from_another_tensorrt_version_is_rebuilt_never_loaded(tmp_path: Path) -> None:
    key = _recipe().key("a" * 64, "Orin sm87")
    _cache_engine(tmp_path, key, "8.5.2.2")
    found, why = cached_engine(tmp_path, key, "10.3.0.30")
    assert found is None and why == "the cached engine was built by TensorRT 8.5.2.2, this is 10.3.0.30"
    engine = _cache_engine(tmp_path, key, "10.3.0.30")
    assert cached_engine(tmp_path, key, "10.3.0.30") == (engine, "cached")


def test_an_engine_without_a_matching_version_stamp_is_never_deserialized() -> None:
    assert version_mismatch({"tensorrt": "10.3.0.30"}, "10.3.0.30") is None
    assert version_mismatch({"tensorrt": "8.6.1"}, "10.3.0.30") == "was built by TensorRT 8.6.1, this is 10.3.0.30"
    assert version_mismatch(None, "10.3.0.30") == "was built by TensorRT an unknown version, this is 10.3.0.30"


def test_a_damaged_or_foreign_engine_is_rebuilt(tmp_path: Path) -> None:
    key = _recipe().key("a" * 64, "Orin sm87")
    assert cached_engine(tmp_path, key, "10.3.0.30") == (None, "no engine cached")
    engine = _cache_engine(tmp_path, key, "10.3.0.30")
    engine.write_bytes(b"half an engi")
    assert cached_engine(tmp_path, key, "10.3.0.30") == (None, "the cached engine file is damaged")
    _, meta = engine_paths(tmp_path, key)
    write_json(meta, engine_meta(dict(key, workspace_mb=1), "10.3.0.30", sha256_file(engine), 1.0))
    assert cached_engine(tmp_path, key, "10.3.0.30") == (None, "the cached engine was built for other settings")


def test_shape_profile_spans_the_batches_asked_for() -> None:
    inputs = [("image", (-1, 224, 224, 3))]
    assert shape_profile(inputs, [1], {}) == {"image": ((1, 224, 224, 3),) * 3}
    assert shape_profile(inputs, [4, 1, 16], {}) == {"image": ((1, 224, 224, 3), (4, 224, 224, 3),
                                                               (16, 224, 224, 3))}
    assert shape_profile([("x", (1, 3, 32, 32))], [8], {}) == {}  # static: no profile


def test_shape_profile_takes_shape_overrides_by_model_or_bundle_name() -> None:
    inputs = [("pixel_values:0", (-1, 3, -1, -1))]
    expected = {"pixel_values:0": ((2, 3, 64, 48),) * 3}
    assert shape_profile(inputs, [1], {"pixel_values:0": [2, 3, 64, 48]}) == expected
    assert shape_profile(inputs, [1], {"image": [2, 3, 64, 48]}, aliases=["image"]) == expected
    with pytest.raises(InputSpecError, match=r"input 'pixel_values:0' dimension 2 is dynamic: give it with --shape"):
        shape_profile(inputs, [1], {})


def test_parser_rejection_becomes_the_candidates_reason() -> None:
    """The parser's errors, as plain data, become the rejected candidate's reason word for word."""
    issues = [ParserIssue("UNSUPPORTED_NODE", "No importer registered for op: NonMaxSuppression", 41,
                          "nms/NonMaxSuppression", "NonMaxSuppression")]
    message = parser_message("detector.onnx", issues)
    assert message == ("TensorRT cannot parse detector.onnx: node 41 (nms/NonMaxSuppression, op NonMaxSuppression): "
                       "UNSUPPORTED_NODE: No importer registered for op: NonMaxSuppression")
    error = ModelFormatError(message)
    failed = Report("bench", device_section(), {"precision": "fp16"}, {"name": "tensorrt"}, status="failed",
                    error={"type": type(error).__name__, "message": str(error)})
    assert rejection(failed) == "failed: " + message
    older = parser_message("m.onnx", [ParserIssue("INVALID_NODE", "Assertion failed: axis >= 0\n", 3)])
    assert older == "TensorRT cannot parse m.onnx: node 3: INVALID_NODE: Assertion failed: axis >= 0"
    assert parser_message("m.onnx", []) == "TensorRT cannot parse m.onnx (the parser reported no detail)"


def test_tensorrt_log_severities_map_to_logging_levels() -> None:
    Severity = enum.Enum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")  # as pybind11 names them
    assert [log_level(s) for s in Severity] == [logging.CRITICAL, logging.ERROR, logging.WARNING, logging.DEBUG,
                                                logging.DEBUG]
    assert log_level("Severity.WARNING") == logging.WARNING


def test_layer_times_average_over_runs() -> None:
    times = LayerTimes()
    for _ in range(2):
        times.add("conv1 + relu", 0.3)
        times.add("fc", 0.1)
        times.runs += 1
    assert times.summary() == [{"name": "conv1 + relu", "mean_ms": 0.3, "share": 0.75},
                               {"name": "fc", "mean_ms": 0.1, "share": 0.25}]


def test_calibrator_batches_cover_the_bundle_calibration_split(digits: Path, mobilenet: Path) -> None:
    from agent.backends.build import batch_ranges

    for bundle, samples, full in ((digits, 200, 25), (mobilenet, 16, 2)):
        data = CalibrationSet.from_bundle(open_model(bundle)).load()
        batches = [data[a:b] for a, b in batch_ranges(len(data), 8)]
        assert len(data) == samples and len(batches) == full and all(len(b) == 8 for b in batches)
        assert np.array_equal(np.concatenate(batches), data[:8 * full])


def test_backend_offers_fp16_and_int8_both_ways(digits: Path) -> None:
    trt = get_backend("tensorrt")
    by_key = {m.key: m for m in open_model(digits).models}
    assert trt.derived_precisions(by_key["onnx/fp32"]) == ("fp16", "int8")
    assert trt.derived_precisions(by_key["tflite/fp32"]) == ()
    assert trt.variants("int8", [1, 2]) == [(1, {"int8_calibration": "entropy"}), (1, {"int8_calibration": "qdq"})]
    assert trt.variants("fp32", [1, 2]) == [(1, {})]  # threads do not matter to a GPU engine
    assert trt.validate_options({"dla_core": "1"})["dla_core"] == 1


def _status_reason(shadow: Path) -> str:
    code = "from agent.backends.tensorrt.backend import probe; print(probe().reason)"
    env = {"PYTHONPATH": f"{shadow}:{ROOT}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip()


def test_status_says_precisely_why_it_cannot_run(tmp_path: Path) -> None:
    """Stand-in `tensorrt` and `pycuda` packages (these cannot be installed here) show each reason in turn."""
    assert _status_reason(tmp_path).startswith("tensorrt: not installed (No module named 'tensorrt')")
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("__version__ = '8.5.2.2'\n")
    assert _status_reason(tmp_path).startswith("pycuda: not installed (No module named 'pycuda')")
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text(
        "def init():\n    raise RuntimeError('cuInit failed: no CUDA-capable device is detected')\n")
    assert _status_reason(tmp_path) == "cuda: no GPU (cuInit failed: no CUDA-capable device is detected)"


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt()
@pytest.mark.parametrize("precision", [None, "fp16", "int8"])
def test_engine_matches_onnxruntime_on_digits(digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              precision: str) -> None:
    monkeypatch.setenv("EDGE_AGENT_CACHE_DIR", str(tmp_path))
    bundle = open_model(digits)
    trt = get_backend("tensorrt")
    options = trt.validate_options({})
    spec = BuildSpec(precision, CalibrationSet.from_bundle(bundle))
    prepared = trt.prepare(digits / "model.fp32.onnx", spec, options)
    assert prepared is not None and prepared.details["engine_cache_hit"] is False
    session = trt.load(prepared.path, 1, options)
    x, y = bundle.evaluation.load(64)
    feeds = bundle.preprocessing.apply(x, "NHWC")
    outputs = np.concatenate([session.run([feeds[i:i + 1]])[0] for i in range(len(feeds))])
    assert (outputs.argmax(axis=1) == y).mean() >= 0.9
    call = session.bind([feeds[:1]])
    for _ in range(5):
        call()
    assert len(session.device_times_ns() or []) == 5
    assert trt.prepare(digits / "model.fp32.onnx", spec, options).details["engine_cache_hit"] is True
