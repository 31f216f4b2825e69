"""Bundles and plain model files: what loads, and the clear error for everything that must not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.cli import edit_manifest

from agent.bundle import Preprocessing, open_model, sha256_file
from agent.errors import BundleError, ModelFormatError, ModelNotFoundError


def test_digits_bundle_loads_with_every_file_verified(digits: Path) -> None:
    bundle = open_model(digits)
    assert bundle.name == "digits"
    assert {m.key for m in bundle.models} == {"onnx/fp32", "tflite/fp32", "tflite/int8"}
    for model in bundle.models:
        assert model.sha256 == sha256_file(model.path)
    assert bundle.inputs[0].layout == "NHWC"
    assert bundle.labels == [str(i) for i in range(10)]
    x_eval, y_eval = bundle.evaluation.load()
    x_cal, _ = bundle.calibration.load()
    assert len(x_eval) == bundle.evaluation.samples and len(y_eval) == len(x_eval)
    assert x_eval.shape[1:] == (8, 8, 1)
    # Disjoint splits: no calibration sample appears in the evaluation split.
    eval_rows = {row.tobytes() for row in x_eval}
    overlap = sum(row.tobytes() in eval_rows for row in x_cal)
    assert overlap <= 2, f"{overlap} calibration samples also in evaluation (sklearn digits has a few duplicates)"


def test_wrong_hash_is_named(digits_copy: Path) -> None:
    with open(digits_copy / "model.fp32.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256 mismatch for model.fp32.onnx"):
        open_model(digits_copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("models"), "missing field 'models'"),
    (lambda m: m.__setitem__("name", 3), "field 'name' must be a string"),
    (lambda m: m["models"][0].pop("sha256"), r"models\[0\]: missing field 'sha256'"),
    (lambda m: m["models"][0].__setitem__("precision", "int4"), "precision 'int4' is not one of"),
    (lambda m: m["models"][0].__setitem__("path", "../../etc/passwd"), "leaves the bundle folder"),
    (lambda m: m["models"][0].__setitem__("path", "gone.onnx"), "model file missing"),
    (lambda m: m.__setitem__("schema", "other/1"), "schema must be"),
    (lambda m: m["inputs"][0].__setitem__("shape", [1, 2.5]), "shape must hold integers"),
])
def test_bad_manifest_is_named(digits_copy: Path, edit, message: str) -> None:
    edit_manifest(digits_copy, edit)
    with pytest.raises(BundleError, match=message):
        open_model(digits_copy)


def test_manifest_that_is_not_json(digits_copy: Path) -> None:
    (digits_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_model(digits_copy)


def test_missing_path_and_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model not found"):
        open_model(tmp_path / "nothing-here")
    with pytest.raises(BundleError, match="without manifest.json"):
        open_model(tmp_path)


def test_plain_files_and_files_that_are_not_models(tmp_path: Path, digits: Path) -> None:
    plain = open_model(digits / "model.fp32.tflite")
    assert plain.is_plain_file and plain.models[0].format == "tflite" and not plain.inputs
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFormatError, match="not a model"):
        open_model(text)
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        open_model(fake)
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("<html>404</html>")
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        open_model(fake_onnx)


def test_preprocessing_per_channel_in_both_layouts() -> None:
    prep = Preprocessing(scale=0.5, mean=(1.0, 2.0, 3.0), std=(1.0, 2.0, 4.0))
    nhwc = np.full((1, 2, 2, 3), 8, dtype=np.uint8)
    out = prep.apply(nhwc, "NHWC")
    assert out.dtype == np.float32
    assert np.allclose(out[0, 0, 0], [(4 - 1) / 1, (4 - 2) / 2, (4 - 3) / 4])
    nchw = np.full((1, 3, 2, 2), 8, dtype=np.uint8)
    assert np.allclose(prep.apply(nchw, "NCHW")[0, :, 1, 1], [3.0, 1.0, 0.25])
