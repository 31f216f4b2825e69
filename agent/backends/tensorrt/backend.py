"""TensorRT: engines built on the device from the bundle's ONNX file, run through pycuda buffers.

`prepare` builds (or finds in `<cache>/tensorrt/`) the engine for the precision asked for, keyed by
the model's sha256, the GPU (or DLA core), the precision and the build settings; the TensorRT version
that built an engine is stored beside it and an engine of another version is rebuilt, never loaded.
`load` deserializes it into a `TensorRTSession` (session.py).
"""

from __future__ import annotations

import functools
import importlib.util
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.backends import quantize
from agent.backends.base import Backend, BackendStatus, Session
from agent.backends.build import BuildSpec, Prepared
from agent.backends.quantize import METHODS
from agent.backends.tensorrt.engine import Runtime, build, has_qdq, make_logger, network_inputs, parse_onnx
from agent.backends.tensorrt.session import TensorRTSession
from agent.backends.tensorrt.support import (
    EngineRecipe,
    TrtApi,
    cached_engine,
    engine_meta,
    engine_paths,
    parse_version,
    profile_tuple,
    shape_profile,
    version_mismatch,
)
from agent.bundle import ModelFile, sha256_file
from agent.cache import cache_folder, read_json, write_atomically, write_json
from agent.device.jetson import count_dla
from agent.device.sysfs import SysfsReader
from agent.errors import BackendUnavailableError, BundleError, ModelFormatError, UsageError


@functools.lru_cache(maxsize=1)
def probe() -> BackendStatus:
    """Whether TensorRT can run here, checked in order: the tensorrt module, pycuda, a CUDA GPU."""
    formats = ("onnx",)
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or a broken install failing at import
        return BackendStatus("tensorrt", False, reason=f"tensorrt: not installed ({_first_line(exc)}); TensorRT "
                             "ships with JetPack", formats=formats)
    version = str(getattr(tensorrt, "__version__", "unknown"))
    if parse_version(version) < (8, 2):  # 8.2: ProfilingVerbosity (layer names), build_serialized_network
        return BackendStatus("tensorrt", False, version, f"tensorrt: version {version} is too old (needs 8.2+)",
                             formats)
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        return BackendStatus("tensorrt", False, version, f"pycuda: not installed ({_first_line(exc)}); "
                             "pip install 'edge-agent[tensorrt]'", formats)
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        return BackendStatus("tensorrt", False, version, f"cuda: no GPU ({_first_line(exc)})", formats)
    if count == 0:
        return BackendStatus("tensorrt", False, version, "cuda: no GPU (the CUDA driver sees no device)", formats)
    device = cuda.Device(0)
    return BackendStatus("tensorrt", True, version, formats=formats, details={
        "gpu": device.name(), "compute_capability": ".".join(map(str, device.compute_capability())),
        "dla_cores": _dla_cores()})


@functools.lru_cache(maxsize=1)
def _runtime() -> Any:
    """TensorRT and pycuda with a CUDA context made current on device 0 (popped at exit), once per process."""
    import pycuda.autoinit  # noqa: F401  (creates the context)
    import pycuda.driver as cuda
    import tensorrt as trt

    return Runtime(trt, cuda, TrtApi(parse_version(trt.__version__)), make_logger(trt))


def _dla_cores() -> int:
    return count_dla(SysfsReader("/")) or 0


class TensorRTBackend(Backend):
    """TensorRT engines from ONNX: FP32, FP16, INT8 (calibrated or from Q/DQ), on the GPU or a DLA core."""

    name = "tensorrt"
    formats = ("onnx",)
    option_defaults: Dict[str, Any] = {"workspace_mb": 0, "dla_core": -1, "int8_calibration": "auto",
                                       "quantization": "minmax"}
    option_choices = {"int8_calibration": ("auto", "entropy", "qdq"), "quantization": METHODS}

    def status(self) -> BackendStatus:
        return probe()

    def derived_precisions(self, model: ModelFile) -> Tuple[str, ...]:
        """FP16 and INT8 engines from an FP32 ONNX file."""
        return ("fp16", "int8") if model.format == "onnx" and model.precision == "fp32" else ()

    def variants(self, precision: str, threads: Sequence[int]) -> List[Tuple[int, Dict[str, Any]]]:
        """Threads do not matter to a GPU engine; INT8 both ways where both exist; a DLA core too for
        FP16/INT8 on Xavier and Orin (with GPU fallback)."""
        choices: List[Dict[str, Any]] = [{}]
        if precision == "int8":
            api = TrtApi(parse_version(self.status().version or "0"))
            modes = (["entropy"] if api.implicit_int8 else []) + (["qdq"] if _can_quantize() else [])
            choices = [{"int8_calibration": mode} for mode in modes]
        if precision in ("fp16", "int8") and self.status().details.get("dla_cores"):
            choices += [dict(choice, dla_core=0) for choice in choices]
        return [(1, choice) for choice in choices]

    def prepare(self, path: Path, spec: BuildSpec, options: Dict[str, Any]) -> Optional[Prepared]:
        """Build the engine for `spec`, or find it in the cache; a model the parser rejects is a
        `ModelFormatError` carrying the parser's message."""
        rt = _runtime()
        source, int8_mode, details, warnings = _source(rt, path, spec, options)
        parsed = parse_onnx(rt.trt, rt.api, rt.logger, source)
        precision = spec.precision or ("int8" if has_qdq(rt.trt, parsed[1]) else "fp32")
        profile = shape_profile(network_inputs(parsed[1]), spec.batches, spec.shapes, spec.names)
        recipe = EngineRecipe(precision, int8_mode or ("qdq" if precision == "int8" else None),
                              spec.calibration.sha256 if int8_mode == "entropy" and spec.calibration else None,
                              profile_tuple(profile), options["workspace_mb"], options["dla_core"])
        key = recipe.key(sha256_file(source), _device_label(rt.cuda, recipe.dla_core))
        folder = cache_folder("tensorrt")
        engine_path, meta_path = engine_paths(folder, key)
        found, why = cached_engine(folder, key, rt.trt.__version__)
        if found is None:
            _build(rt, parsed, recipe, spec, key, folder)
        meta = read_json(meta_path) or {}
        if recipe.int8_mode == "entropy" and spec.calibration and meta.get("calibration_samples") is not None:
            warning = spec.calibration.warning(meta["calibration_samples"])
            warnings = warnings + ([warning] if warning else [])
        details.update(kind="tensorrt engine", engine=str(engine_path), engine_cache_hit=found is not None,
                       cache=why, tensorrt=rt.trt.__version__, precision=precision,
                       int8_calibration=recipe.int8_mode, device=key["device"], dla_core=recipe.dla_core,
                       workspace_mb=recipe.workspace_mb, profile=key["profile"], build_s=meta.get("build_s"),
                       calibration_samples=meta.get("calibration_samples"))
        return Prepared(engine_path, precision, details, warnings)

    def load(self, path: Path, threads: int, options: Dict[str, Any]) -> Session:
        if path.suffix == ".onnx":  # a plain call with the ONNX file: build (or find) its own-precision engine
            prepared = self.prepare(path, BuildSpec(), options)
            assert prepared is not None
            path = prepared.path
        rt = _runtime()
        meta = read_json(path.with_suffix(".json"))
        stale = version_mismatch(meta, rt.trt.__version__)
        if stale:
            raise ModelFormatError(f"the engine {path.name} {stale}: it is not loaded (bench and select rebuild "
                                   "engines from the ONNX file)")
        assert meta is not None
        runtime = rt.trt.Runtime(rt.logger)
        if options["dla_core"] >= 0:
            runtime.DLA_core = options["dla_core"]
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFormatError(f"TensorRT cannot load the engine {path.name}: {'; '.join(rt.logger.errors)}")
        key = meta.get("key", {})
        configuration = {"engine": str(path), "precision": key.get("precision"), "device": key.get("device"),
                         "dla_core": options["dla_core"], "io_api": "named tensors (execute_async_v3)"
                         if rt.api.named_tensors else "bindings (execute_async_v2)"}
        return TensorRTSession(rt, runtime, engine, key.get("precision") or "fp32", configuration)


def _source(rt: Any, path: Path, spec: BuildSpec,
            options: Dict[str, Any]) -> Tuple[Path, Optional[str], Dict[str, Any], List[str]]:
    """The ONNX file TensorRT parses for `spec` (the bundle's, or its Q/DQ or FP16 twin), the INT8 mode,
    and what making the twin reported."""
    if spec.precision == "int8":
        if spec.calibration is None:
            raise BundleError("INT8 needs the bundle's calibration data (data.calibration)")
        try:
            mode = rt.api.int8_mode(options["int8_calibration"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if mode == "entropy":
            return path, mode, {}, []
        if not _can_quantize():
            raise BackendUnavailableError("int8_calibration=qdq makes the Q/DQ model with ONNX Runtime and onnx: "
                                          "pip install 'edge-agent[onnx]'")
        qdq = quantize.quantize_int8(path, spec.calibration, options["quantization"], target="tensorrt")
        return qdq.path, mode, {"quantization": qdq.details}, list(qdq.warnings)
    if spec.precision == "fp16" and rt.api.strongly_typed:
        return quantize.convert_fp16(path).path, None, {}, []
    return path, None, {}, []


def _build(rt: Any, parsed: Any, recipe: EngineRecipe, spec: BuildSpec, key: Dict[str, Any], folder: Path) -> None:
    """Build the engine and store it with its metadata (key, TensorRT version, sha256, build time)."""
    version = rt.trt.__version__
    engine_path, meta_path = engine_paths(folder, key)
    calibration_cache = (folder / f"{key['model_sha256'][:12]}-{recipe.calibration_sha256}-trt{version}.calib"
                         if recipe.int8_mode == "entropy" else None)
    device = "".join(c if c.isalnum() else "-" for c in key["device"])
    started = time.perf_counter()
    data, info = build(rt, parsed, recipe, spec.calibration, folder / f"timing-{device}-trt{version}.cache",
                       calibration_cache)
    write_atomically(engine_path, data)
    write_json(meta_path, dict(engine_meta(key, version, sha256_file(engine_path), time.perf_counter() - started),
                               **info))


def _can_quantize() -> bool:
    """Whether ONNX Runtime's quantizer (onnxruntime and onnx) is installed, for explicit INT8."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _device_label(cuda: Any, dla_core: int) -> str:
    device = cuda.Device(0)
    label = f"{device.name()} sm{''.join(map(str, device.compute_capability()))}"
    return label + (f" dla{dla_core}" if dla_core >= 0 else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
