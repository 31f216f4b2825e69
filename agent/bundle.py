"""Model bundles and plain model files: what to run, how to feed it, and how to judge its output.

A bundle is a folder with `manifest.json` (format in docs/bundle.md): the model in one or more formats
and precisions with their sha256, the input specification, preprocessing, labels, and disjoint
calibration and evaluation splits. A plain `.onnx` or `.tflite` file is opened as a bundle of one
model with no data; its inputs are then read from the model by the runtime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from agent.errors import BundleError, ModelNotFoundError
from agent.modelfile import FORMATS, model_format

BUNDLE_SCHEMA = "edge-agent/bundle/1"
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
LAYOUTS = ("NHWC", "NCHW", "ANY")

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the manifest declares it; a string dimension is symbolic."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str = "float32"
    layout: str = "ANY"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


@dataclass(frozen=True)
class ModelFile:
    """One file of a bundle: a format and precision of the same network."""

    format: str
    precision: str
    path: Path
    sha256: str
    size_bytes: int

    @property
    def key(self) -> str:
        """The short name reports and `--precision` filters use, e.g. `tflite/int8`."""
        return f"{self.format}/{self.precision}"


@dataclass(frozen=True)
class Preprocessing:
    """Turns stored samples into float inputs: `(raw * scale - mean) / std`, per channel."""

    scale: float = 1.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"

    def apply(self, raw: np.ndarray, layout: str) -> np.ndarray:
        """Preprocess a batch `[N, ...]` laid out as `layout` (channels last for NHWC, axis 1 for NCHW)."""
        x = raw.astype(np.float32) * np.float32(self.scale)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if layout == "NCHW" and x.ndim == 4:
            mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as worker requests and calibration sets carry it."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> Optional[Preprocessing]:
        """The inverse of `to_dict` (None stays None)."""
        if data is None:
            return None
        return cls(float(data["scale"]), tuple(data["mean"]), tuple(data["std"]), data["channel_order"])


@dataclass(frozen=True)
class DataSplit:
    """A `.npz` data split: `x` raw samples without the batch axis, `y` class ids where labelled."""

    path: Path
    sha256: str
    samples: int

    def load(self, limit: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Read the samples (and labels, if any), at most `limit` of them; never unpickles."""
        try:
            with np.load(str(self.path), allow_pickle=False) as data:
                x = data["x"][:limit]
                y = data["y"][:limit].astype(np.int64) if "y" in data.files else None
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"cannot read data split {self.path}: {exc}") from exc
        if y is not None and len(y) != len(x):
            raise BundleError(f"data split {self.path}: {len(x)} samples but {len(y)} labels")
        return x, y


@dataclass
class Bundle:
    """A model to measure: its files, how to feed them, and the data to judge them with."""

    name: str
    root: Path
    models: List[ModelFile]
    inputs: List[TensorSpec] = field(default_factory=list)
    outputs: List[TensorSpec] = field(default_factory=list)
    preprocessing: Optional[Preprocessing] = None
    labels: Optional[List[str]] = None
    calibration: Optional[DataSplit] = None
    evaluation: Optional[DataSplit] = None
    task: str = "classification"
    is_plain_file: bool = False


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_model(path: Union[str, Path], verify: bool = True) -> Bundle:
    """Open a bundle folder or a plain `.onnx`/`.tflite` file; `verify` checks every sha256."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise BundleError(f"{path} is a folder without {MANIFEST}: not a model bundle")
        return _load_bundle(manifest, verify)
    return _plain_file(path)


def _plain_file(path: Path) -> Bundle:
    fmt = model_format(path)
    model = ModelFile(fmt, "fp32", path.resolve(), sha256_file(path), path.stat().st_size)
    return Bundle(name=path.stem, root=path.resolve().parent, models=[model], is_plain_file=True)


def _load_bundle(manifest_path: Path, verify: bool) -> Bundle:
    root = manifest_path.parent.resolve()
    try:
        doc = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    fields = _Fields(doc, str(manifest_path))
    if fields.get("schema", str) != BUNDLE_SCHEMA:
        raise BundleError(f"{manifest_path}: schema must be {BUNDLE_SCHEMA!r}")
    models = [_model_file(root, _Fields(m, f"{manifest_path}: models[{i}]"), verify)
              for i, m in enumerate(fields.get("models", list))]
    if not models:
        raise BundleError(f"{manifest_path}: models is empty")
    data = fields.get("data", dict, required=False) or {}
    labels_name = fields.get("labels", str, required=False)
    labels = None
    if labels_name:
        labels = _inside(root, labels_name, "labels").read_text(encoding="utf-8").splitlines()
    prep = fields.get("preprocessing", dict, required=False)
    return Bundle(
        name=fields.get("name", str),
        root=root,
        models=models,
        inputs=[_tensor_spec(_Fields(t, f"{manifest_path}: inputs")) for t in fields.get("inputs", list)],
        outputs=[_tensor_spec(_Fields(t, f"{manifest_path}: outputs")) for t in fields.get("outputs", list)],
        preprocessing=_preprocessing(_Fields(prep, f"{manifest_path}: preprocessing")) if prep else None,
        labels=labels,
        calibration=_split(root, data, "calibration", verify),
        evaluation=_split(root, data, "evaluation", verify),
        task=fields.get("task", str, required=False) or "classification",
    )


class _Fields:
    """Typed access to one JSON object of the manifest, with errors that name the field."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise BundleError(f"{where}: expected an object")
        self.doc, self.where = doc, where

    def get(self, name: str, kind: Any, required: bool = True) -> Any:
        if name not in self.doc:
            if required:
                raise BundleError(f"{self.where}: missing field {name!r}")
            return None
        value = self.doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleError(f"{self.where}: field {name!r} must be {_kind_name(kind)}")
        return value


def _kind_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _inside(root: Path, relative: str, what: str) -> Path:
    target = (root / relative).resolve()
    if root != target and root not in target.parents:
        raise BundleError(f"{what} path {relative!r} leaves the bundle folder")
    if not target.is_file():
        raise BundleError(f"{what} file missing: {target}")
    return target


def _checked(root: Path, fields: _Fields, what: str, verify: bool) -> Tuple[Path, str]:
    path = _inside(root, fields.get("path", str), what)
    expected = fields.get("sha256", str).lower()
    if verify:
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"sha256 mismatch for {path.name}: manifest says {expected}, file is {actual}")
    return path, expected


def _model_file(root: Path, fields: _Fields, verify: bool) -> ModelFile:
    fmt = fields.get("format", str)
    precision = fields.get("precision", str)
    if fmt not in FORMATS:
        raise BundleError(f"{fields.where}: format {fmt!r} is not one of {FORMATS}")
    if precision not in PRECISIONS:
        raise BundleError(f"{fields.where}: precision {precision!r} is not one of {PRECISIONS}")
    path, digest = _checked(root, fields, "model", verify)
    return ModelFile(fmt, precision, path, digest, path.stat().st_size)


def _tensor_spec(fields: _Fields) -> TensorSpec:
    shape = fields.get("shape", list)
    if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
        raise BundleError(f"{fields.where}: shape must hold integers or symbolic names")
    layout = fields.get("layout", str, required=False) or "ANY"
    if layout not in LAYOUTS:
        raise BundleError(f"{fields.where}: layout {layout!r} is not one of {LAYOUTS}")
    return TensorSpec(fields.get("name", str), tuple(shape), fields.get("dtype", str, required=False)
                      or "float32", layout)


def _preprocessing(fields: _Fields) -> Preprocessing:
    number = (int, float)
    return Preprocessing(
        scale=float(fields.get("scale", number, required=False) or 1.0),
        mean=tuple(float(v) for v in (fields.get("mean", list, required=False) or [0.0])),
        std=tuple(float(v) for v in (fields.get("std", list, required=False) or [1.0])),
        channel_order=fields.get("channel_order", str, required=False) or "RGB",
    )


def _split(root: Path, data: Dict[str, Any], name: str, verify: bool) -> Optional[DataSplit]:
    if name not in data:
        return None
    fields = _Fields(data[name], f"data.{name}")
    path, digest = _checked(root, fields, f"data.{name}", verify)
    return DataSplit(path, digest, fields.get("samples", int))


Split = Tuple[np.ndarray, Optional[np.ndarray]]


def write_bundle(source: Bundle, target: Path, name: str, model: Path, provenance: Dict[str, Any],
                 labels: Optional[List[str]] = None, splits: Optional[Dict[str, Split]] = None) -> Path:
    """Write a bundle at `target` around the FP32 ONNX file `model` (already inside it): `source`'s manifest
    (inputs, outputs, preprocessing, task), its labels and data splits copied, or `labels` and `splits`
    (`{"calibration"|"evaluation": (x, y)}`) in their place; the first output's last dimension follows the
    labels. Returns the manifest's path."""
    manifest = json.loads((source.root / MANIFEST).read_text(encoding="utf-8"))
    names = labels if labels is not None else source.labels
    if names is not None:
        (target / "labels.txt").write_text("".join(f"{label}\n" for label in names), encoding="utf-8")
        manifest["labels"] = "labels.txt"
    if labels is not None:
        manifest["outputs"][0]["shape"][-1] = len(labels)
    data = dict(splits or {})
    for role in ("calibration", "evaluation"):
        split: Optional[DataSplit] = getattr(source, role)
        if split is not None and role not in data:
            data[role] = split.load()
    return _write_manifest(target, dict(manifest, name=name, provenance=provenance), model, data)


def new_bundle(target: Path, name: str, inputs: List[TensorSpec], outputs: List[TensorSpec], model: Path,
               splits: Dict[str, Split], provenance: Dict[str, Any]) -> Path:
    """Write the manifest of a bundle made on the device at `target` around the FP32 ONNX file `model` (already
    inside it), with its data `splits`; returns the manifest's path."""
    manifest = {"schema": BUNDLE_SCHEMA, "name": name, "task": "classification",
                "inputs": [t.to_dict() for t in inputs],
                "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in outputs]}
    return _write_manifest(target, dict(manifest, provenance=provenance), model, splits)


def _write_manifest(target: Path, manifest: Dict[str, Any], model: Path, splits: Dict[str, Split]) -> Path:
    manifest["models"] = [{"format": "onnx", "precision": "fp32", "path": model.name,
                           "sha256": sha256_file(model), "bytes": model.stat().st_size}]
    data = {}
    for role, (x, y) in splits.items():
        path = target / f"{role}.npz"
        if y is None:
            np.savez(str(path), x=x)
        else:
            np.savez(str(path), x=x, y=y)
        data[role] = {"path": path.name, "sha256": sha256_file(path), "samples": len(x)}
    manifest["data"] = data
    path = target / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
