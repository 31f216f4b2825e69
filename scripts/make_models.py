"""Regenerate the bundled models under `models/` reproducibly (a dev-only tool).

Builds `models/digits` (a small CNN trained on scikit-learn's handwritten digits) and
`models/mobilenet_v2` (MobileNetV2 1.0 at 224x224, random weights with real BatchNorm statistics).
Each Keras model becomes a TFLite FP32 file (the source of truth), its ONNX twin converted from that
file (same weights by construction) and a full-integer INT8 TFLite file calibrated on the bundle's
calibration split only. Manifests follow `docs/bundle.md`. Seeds are fixed and TensorFlow runs
single-threaded with deterministic ops, so two runs write byte-identical files.

The dependencies are for this script only; the agent, its tests and devices never need them:

    python3 -m venv /tmp/edge-modelgen
    /tmp/edge-modelgen/bin/pip install -r scripts/make_models.requirements.txt
    /tmp/edge-modelgen/bin/python scripts/make_models.py          # rebuild every bundle, then check

`--check` only verifies the committed bundles (hashes, Top-1, ONNX/TFLite fidelity, INT8 fidelity);
it needs numpy, onnxruntime and ai-edge-litert, not TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SEED = 0
ONNX_OPSET = 17
SIZE_LIMIT_BYTES = 40 * 1000 * 1000
DIGITS_CALIBRATION_SAMPLES = 200
MOBILENET_CALIBRATION_SAMPLES = 16
MOBILENET_EVALUATION_SAMPLES = 64
MODEL_FILES = (("onnx", "fp32", "model.fp32.onnx"), ("tflite", "fp32", "model.fp32.tflite"),
               ("tflite", "int8", "model.int8.tflite"))


@dataclass(frozen=True)
class Preprocessing:
    """The bundle's `x = (raw * scale - mean) / std` with one mean/std for every channel."""

    scale: float
    mean: float
    std: float
    channel_order: str

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Turn stored raw samples into the float model input."""
        return ((raw.astype(np.float32) * self.scale - self.mean) / self.std).astype(np.float32)


@dataclass
class Bundle:
    """Everything a bundle folder is written from: the network, its metadata and data splits."""

    name: str
    description: str
    model: Any  # keras.Model whose output is the dict {"logits": ...}
    preprocessing: Preprocessing
    calibration_x: np.ndarray
    evaluation_x: np.ndarray
    evaluation_y: Optional[np.ndarray]
    labels: Optional[List[str]]
    notes: str


def configure_tensorflow() -> None:
    """Seed everything and make TensorFlow single-threaded and deterministic before any op runs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # the same kernels on every x86 CPU
    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(SEED)


def build_digits() -> Bundle:
    """Train the digits CNN on scikit-learn's 8x8 digits; evaluation and calibration are held out."""
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., np.newaxis]  # pixel values 0..16, NHWC
    classes = digits.target.astype(np.int64)
    rest, evaluation = train_test_split(np.arange(len(classes)), test_size=0.25,
                                        stratify=classes, random_state=SEED)
    train, calibration = train_test_split(rest, test_size=DIGITS_CALIBRATION_SAMPLES,
                                          stratify=classes[rest], random_state=SEED)
    preprocessing = Preprocessing(scale=1.0 / 16.0, mean=0.0, std=1.0, channel_order="GRAY")

    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(image)
    hidden = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    logits = keras.layers.Dense(10, name="logits")(hidden)
    network = keras.Model(image, logits)
    network.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    network.fit(preprocessing.apply(images[train]), classes[train], epochs=60, batch_size=32,
                shuffle=True, verbose=0)
    notes = ("scikit-learn load_digits() (1797 real 8x8 handwritten digits, pixels 0..16). "
             f"Stratified split, seed {SEED}: evaluation = 25% ({len(evaluation)} samples), never used for "
             f"training or calibration; of the remaining 75%, {len(calibration)} stratified samples form the "
             f"calibration split and are held out of training too; the other {len(train)} train the CNN. "
             "Output: logits (no softmax).")
    return Bundle("digits", "Small CNN trained on scikit-learn's 8x8 handwritten digits",
                  keras.Model(image, {"logits": logits}), preprocessing, images[calibration],
                  images[evaluation], classes[evaluation], [str(d) for d in range(10)], notes)


def synthetic_images(count: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth image-like uint8 RGB pictures (a colour gradient plus soft blobs), NHWC 224x224."""
    rows, cols = np.mgrid[0:224, 0:224].astype(np.float32) / 223.0
    pictures = []
    for _ in range(count):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        ramp = ((np.cos(angle) * cols + np.sin(angle) * rows) + 1.0) / 2.0
        start, end = rng.uniform(0.0, 255.0, size=(2, 3))
        picture = start + ramp[..., np.newaxis] * (end - start)
        for _ in range(int(rng.integers(2, 6))):
            centre, radius = rng.uniform(0.0, 1.0, size=2), rng.uniform(0.05, 0.3)
            weight = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * radius ** 2))
            picture += weight[..., np.newaxis] * (rng.uniform(0.0, 255.0, size=3) - picture)
        pictures.append(np.clip(np.rint(picture), 0, 255).astype(np.uint8))
    return np.stack(pictures)


def build_mobilenet_v2() -> Bundle:
    """MobileNetV2 1.0 at 224 with seeded random weights and BatchNorm statistics from calibration."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    calibration = synthetic_images(MOBILENET_CALIBRATION_SAMPLES, rng)
    evaluation = synthetic_images(MOBILENET_EVALUATION_SAMPLES, rng)
    preprocessing = Preprocessing(scale=1.0 / 127.5, mean=1.0, std=1.0, channel_order="RGB")

    image = keras.Input((224, 224, 3), name="image")
    network = keras.applications.MobileNetV2(input_tensor=image, alpha=1.0, weights=None,
                                             classes=1000, classifier_activation=None)
    # Random weights leave BatchNorm at mean 0 / variance 1 and activations collapse towards zero.
    # With momentum 0, one training-mode pass sets every moving statistic to its batch statistic.
    norms = [layer for layer in network.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    network(preprocessing.apply(calibration), training=True)
    notes = ("keras.applications.MobileNetV2(alpha=1.0, weights=None, classifier_activation=None), "
             f"seeded random weights (seed {SEED}); BatchNorm moving statistics set by one training-mode "
             "pass over the calibration images. Data: synthetic smooth images (colour gradients and soft "
             f"blobs, numpy seed {SEED}), {len(calibration)} calibration and {len(evaluation)} evaluation "
             "samples drawn one after the other, so disjoint; unlabelled, the weights are random. "
             "Output: logits (no softmax).")
    return Bundle("mobilenet_v2", "MobileNetV2 1.0 at 224x224, random weights (for speed work)",
                  keras.Model(image, {"logits": network.output}), preprocessing, calibration,
                  evaluation, None, None, notes)


def convert_tflite(bundle: Bundle, int8: bool) -> bytes:
    """Convert the Keras model to TFLite FP32, or full-integer INT8 (int8 I/O) calibrated on the
    calibration split only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(bundle.model)
    if int8:
        calibration = bundle.preprocessing.apply(bundle.calibration_x)

        def representative_dataset() -> Iterator[List[np.ndarray]]:
            for sample in calibration:
                yield [sample[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # keras prints every exported endpoint
        return converter.convert()


def convert_onnx(tflite_path: Path) -> bytes:
    """Convert the FP32 TFLite file to its ONNX twin, named `image` -> `logits`, batch dim `batch`."""
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=ONNX_OPSET)
    graph = model.graph
    renames = {graph.input[0].name: "image", graph.output[0].name: "logits"}
    for value in list(graph.input) + list(graph.output):
        value.name = renames[value.name]
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    # tf2onnx numbers the names it makes up ("const_fold_opt__41") in an order that changes from
    # run to run: renumber them in graph order and sort the initializers by first use.
    numbered = re.compile(r"__\d+")

    def canonical(name: str) -> str:
        if name not in renames and numbered.search(name):
            renames[name] = numbered.sub(f"__{len(renames)}", name)
        return renames.get(name, name)

    first_use: Dict[str, int] = {}
    for node in graph.node:
        node.name = canonical(node.name)
        node.input[:] = [canonical(name) for name in node.input]
        node.output[:] = [canonical(name) for name in node.output]
        for name in node.input:
            first_use.setdefault(name, len(first_use))
    initializers = [onnx.TensorProto() for _ in graph.initializer]
    for clone, tensor in zip(initializers, graph.initializer):
        clone.CopyFrom(tensor)
        clone.name = canonical(clone.name)
    del graph.initializer[:]
    graph.initializer.extend(sorted(initializers, key=lambda tensor: first_use[tensor.name]))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def write_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Write a compressed .npz with fixed zip timestamps (numpy's own stamps the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.ascontiguousarray(array), allow_pickle=False)


def file_entry(path: Path) -> Dict[str, Any]:
    """The manifest's `path`/`sha256`/`bytes` of a written file, computed from the file itself."""
    content = path.read_bytes()
    return {"path": path.name, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}


def tool_versions() -> str:
    """The converter versions, for the provenance notes."""
    import keras
    import tensorflow as tf
    import tf2onnx

    return (f"Built with tensorflow-cpu {tf.__version__}, keras {keras.__version__}, "
            f"tf2onnx {tf2onnx.__version__} (ONNX opset {ONNX_OPSET}).")


def write_bundle(bundle: Bundle) -> None:
    """Write a bundle's model files, data splits, labels and manifest into models/<name>/."""
    folder = MODELS_DIR / bundle.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.fp32.tflite").write_bytes(convert_tflite(bundle, int8=False))
    (folder / "model.int8.tflite").write_bytes(convert_tflite(bundle, int8=True))
    (folder / "model.fp32.onnx").write_bytes(convert_onnx(folder / "model.fp32.tflite"))
    write_npz(folder / "calibration.npz", {"x": bundle.calibration_x})
    evaluation = {"x": bundle.evaluation_x}
    if bundle.evaluation_y is not None:
        evaluation["y"] = bundle.evaluation_y
    write_npz(folder / "evaluation.npz", evaluation)

    input_shape = ["batch"] + list(bundle.evaluation_x.shape[1:])
    output_shape = ["batch", int(bundle.model.output["logits"].shape[-1])]
    manifest: Dict[str, Any] = {
        "schema": "edge-agent/bundle/1",
        "name": bundle.name,
        "description": bundle.description,
        "task": "classification",
        "inputs": [{"name": "image", "shape": input_shape, "dtype": "float32", "layout": "NHWC"}],
        "outputs": [{"name": "logits", "shape": output_shape, "dtype": "float32"}],
        "preprocessing": {"scale": bundle.preprocessing.scale, "mean": [bundle.preprocessing.mean],
                          "std": [bundle.preprocessing.std],
                          "channel_order": bundle.preprocessing.channel_order},
    }
    if bundle.labels is not None:
        (folder / "labels.txt").write_text("\n".join(bundle.labels) + "\n", encoding="utf-8")
        manifest["labels"] = "labels.txt"
    manifest["models"] = [dict(format=fmt, precision=precision, **file_entry(folder / name))
                          for fmt, precision, name in MODEL_FILES]
    manifest["data"] = {split: {"path": entry["path"], "sha256": entry["sha256"], "samples": count}
                        for split, entry, count in (
                            ("calibration", file_entry(folder / "calibration.npz"),
                             len(bundle.calibration_x)),
                            ("evaluation", file_entry(folder / "evaluation.npz"),
                             len(bundle.evaluation_x)))}
    manifest["provenance"] = {"generator": "scripts/make_models.py", "seed": SEED,
                              "notes": bundle.notes + " " + tool_versions()}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print("wrote", folder)


def run_onnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Logits of the ONNX file for a whole batch, on onnxruntime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Logits of the TFLite file for a whole batch; integer I/O is (de)quantized with its own
    scale and zero point, as docs/bundle.md prescribes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    feed = inputs
    if np.issubdtype(source["dtype"], np.integer):
        scale, zero_point = source["quantization"]
        limits = np.iinfo(source["dtype"])
        feed = np.clip(np.rint(inputs / scale + zero_point), limits.min, limits.max)
    interpreter.set_tensor(source["index"], feed.astype(source["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(sink["index"])
    if np.issubdtype(sink["dtype"], np.integer):
        scale, zero_point = sink["quantization"]
        logits = (logits.astype(np.float32) - zero_point) * scale
    return logits.astype(np.float32)


def fidelity(reference: np.ndarray, other: np.ndarray) -> Dict[str, float]:
    """Top-1 agreement, per-sample cosine similarity (worst and mean) and max abs difference of two
    logit sets."""
    cosines = np.sum(reference * other, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1))
    return {"agreement": float(np.mean(reference.argmax(1) == other.argmax(1))),
            "min_cosine": float(np.min(cosines)), "mean_cosine": float(np.mean(cosines)),
            "max_abs_diff": float(np.max(np.abs(reference - other)))}


def check_bundle(name: str) -> Dict[str, Any]:
    """Verify a written bundle's hashes and measure Top-1 and cross-format fidelity on its
    evaluation split."""
    folder = MODELS_DIR / name
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for entry in list(manifest["models"]) + list(manifest["data"].values()):
        if file_entry(folder / entry["path"])["sha256"] != entry["sha256"]:
            raise SystemExit(f"{name}: sha256 of {entry['path']} does not match its manifest")
    prep = manifest["preprocessing"]
    with np.load(folder / "evaluation.npz", allow_pickle=False) as evaluation:
        inputs = ((evaluation["x"].astype(np.float32) * prep["scale"] - prep["mean"][0])
                  / prep["std"][0]).astype(np.float32)
        labels = evaluation["y"] if "y" in evaluation.files else None
    logits = {"onnx fp32": run_onnx(folder / "model.fp32.onnx", inputs),
              "tflite fp32": run_tflite(folder / "model.fp32.tflite", inputs),
              "tflite int8": run_tflite(folder / "model.int8.tflite", inputs)}
    result: Dict[str, Any] = {"samples": len(inputs),
                              "onnx vs tflite fp32": fidelity(logits["tflite fp32"], logits["onnx fp32"]),
                              "tflite int8 vs fp32": fidelity(logits["tflite fp32"], logits["tflite int8"])}
    if labels is not None:
        result["top1"] = {key: float(np.mean(value.argmax(1) == labels)) for key, value in logits.items()}
    return result


def check_all() -> bool:
    """Print every bundle's measurements; False when digits misses its targets or models/ is too big."""
    results = {name: check_bundle(name) for name in ("digits", "mobilenet_v2")}
    print(json.dumps(results, indent=2))
    total = sum(path.stat().st_size for path in MODELS_DIR.rglob("*") if path.is_file())
    print(f"models/ total: {total / 1e6:.2f} MB")
    digits = results["digits"]
    failures = [problem for problem, failed in (
        ("digits FP32 Top-1 below 0.95", digits["top1"]["tflite fp32"] < 0.95),
        ("digits INT8 more than 1 point below FP32",
         digits["top1"]["tflite int8"] < digits["top1"]["tflite fp32"] - 0.01),
        ("digits ONNX/TFLite top-1 agreement below 1.0", digits["onnx vs tflite fp32"]["agreement"] < 1.0),
        ("digits ONNX/TFLite cosine below 0.9999", digits["onnx vs tflite fp32"]["min_cosine"] < 0.9999),
        ("models/ is 40 MB or more", total >= SIZE_LIMIT_BYTES)) if failed]
    for problem in failures:
        print("FAILED:", problem, file=sys.stderr)
    return not failures


def main() -> int:
    """Rebuild every bundle (unless --check) and verify them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only verify the bundles already under models/ (no TensorFlow needed)")
    if not parser.parse_args().check:
        configure_tensorflow()
        for build in (build_digits, build_mobilenet_v2):
            write_bundle(build())
    return 0 if check_all() else 1


if __name__ == "__main__":
    sys.exit(main())
