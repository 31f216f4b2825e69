"""On-device precisions for ONNX Runtime: INT8 by static quantization, FP16 by conversion.

INT8 is ONNX Runtime's `quantize_static` in QDQ format with per-channel weights, calibrated on the
bundle's calibration split (MinMax, Entropy or Percentile). Activations are unsigned on x86 CPUs
(ONNX Runtime's fast path there: U8S8) and signed on ARM; for TensorRT they are signed and symmetric,
the only form its explicit INT8 accepts. FP16 is `onnxruntime.transformers.float16` (inside the
onnxruntime wheel) with float32 inputs and outputs kept. Results are cached in
`<cache>/quantized/`, keyed by the model's sha256, the method, the activation type, the calibration
data's sha256 and the onnxruntime version: a second run finds the file and says so (`cache_hit`).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from agent.backends.build import CalibrationSet, Prepared
from agent.bundle import sha256_file
from agent.cache import cache_folder, read_json, write_atomically, write_json
from agent.errors import BundleError, ModelFormatError, UsageError

METHODS = ("minmax", "entropy", "percentile")
_METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_BATCH = 8  # calibration batch for a dynamic batch dimension


def activation_type(machine: str, target: str) -> str:
    """`uint8` or `int8` activations for `target` (`cpu` or `tensorrt`) on a CPU `machine` (uname -m)."""
    if target == "tensorrt":
        return "int8"
    return "uint8" if machine.lower() in ("x86_64", "amd64", "i686", "x86") else "int8"


def cache_name(source_sha256: str, method: str, target: str, activations: str, calibration_sha256: str,
               ort_version: str) -> str:
    """The cache file name of one quantization: everything that changes the result is in it."""
    return (f"{source_sha256[:16]}-int8-{target}-{method}-{activations}-cal{calibration_sha256[:12]}"
            f"-ort{ort_version}.onnx")


def quantize_int8(source: Path, calibration: CalibrationSet, method: str = "minmax",
                  target: str = "cpu") -> Prepared:
    """The QDQ INT8 twin of the FP32 ONNX file `source`, quantized now or found in the cache."""
    import onnxruntime

    if method not in METHODS:
        raise UsageError(f"quantization method {method!r} is not one of {', '.join(METHODS)}")
    activations = activation_type(platform.machine(), target)
    name = cache_name(sha256_file(source), method, target, activations, calibration.sha256, onnxruntime.__version__)
    path = cache_folder("quantized") / name
    meta_path = path.with_suffix(".json")
    meta = read_json(meta_path)
    hit = path.is_file() and meta is not None and meta.get("sha256") == sha256_file(path)
    if not hit:
        meta = _quantize(source, path, calibration, method, target, activations)
        write_json(meta_path, meta)
    assert meta is not None
    details = dict(meta, kind="onnxruntime static quantization", file=str(path), cache_hit=hit)
    warning = calibration.warning(meta["calibration_samples"])
    return Prepared(path, "int8", details, [warning] if warning else [])


def _quantize(source: Path, output: Path, calibration: CalibrationSet, method: str, target: str,
              activations: str) -> Dict[str, Any]:
    """Run `quantize_static`; TensorRT wants symmetric int8 activations and float biases (its Q/DQ rules)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name, batch = _first_input(source)
    samples = calibration.load()
    reader = _Reader(input_name, samples, batch)
    started = time.perf_counter()
    temporary = output.with_name(f".{output.name}.partial")
    try:
        quantize_static(
            str(source), str(temporary), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, _METHOD_NAMES[method]),
            extra_options={"ActivationSymmetric": activations == "int8", "QuantizeBias": target != "tensorrt"})
        temporary.replace(output)
    except Exception as exc:  # ORT and onnx raise their own types for graphs they cannot quantize
        raise ModelFormatError(f"ONNX Runtime cannot quantize {source.name}: {_first_line(exc)}") from exc
    finally:
        if temporary.exists():
            temporary.unlink()
    return {"method": method, "target": target, "format": "QDQ", "per_channel": True, "activations": activations,
            "weights": "int8", "calibration_samples": reader.used, "calibration_sha256": calibration.sha256,
            "seconds": round(time.perf_counter() - started, 3), "sha256": sha256_file(output)}


class _Reader:
    """ONNX Runtime's `CalibrationDataReader` protocol (`get_next` until None) over the samples."""

    def __init__(self, input_name: str, samples: np.ndarray, batch: int) -> None:
        self.used = len(samples)
        self._batches: Iterator[Dict[str, np.ndarray]] = iter(
            [{input_name: samples[i:i + batch]} for i in range(0, len(samples), batch)])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._batches, None)


def _first_input(path: Path) -> Tuple[str, int]:
    """The model's single graph input and the calibration batch it takes (its fixed batch, else 8)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ModelFormatError(f"cannot read {path.name} to quantize it: {_first_line(exc)}") from exc
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise BundleError(f"INT8 calibration feeds one input from the calibration split; {path.name} has "
                          f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)})")
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    return inputs[0].name, fixed or _BATCH


def convert_fp16(source: Path) -> Prepared:
    """The FP16 twin of `source` (float32 inputs and outputs kept), converted now or found in the cache."""
    import onnxruntime

    path = cache_folder("quantized") / f"{sha256_file(source)[:16]}-fp16-ort{onnxruntime.__version__}.onnx"
    hit = path.is_file()
    started = time.perf_counter()
    if not hit:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        except Exception as exc:
            raise ModelFormatError(f"cannot convert {source.name} to FP16: {_first_line(exc)}") from exc
        write_atomically(path, model.SerializeToString())
    details = {"kind": "onnxruntime float16 conversion", "file": str(path), "cache_hit": hit,
               "keep_io_types": True, "seconds": round(time.perf_counter() - started, 3)}
    return Prepared(path, "fp16", details)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

