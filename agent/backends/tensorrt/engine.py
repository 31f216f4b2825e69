"""Building TensorRT engines from ONNX files: parse, configure, calibrate, build, through the caches.

FP32 and FP16 engines come from the bundle's FP32 ONNX file (FP16 with the builder's FP16 flag; on
strongly typed TensorRT 11, from an FP16 conversion of it). INT8 comes two ways: implicit, the
builder's INT8 flag with an `IInt8EntropyCalibrator2` fed the calibration split (its result kept in a
calibration cache), or explicit, from ONNX Runtime's Q/DQ model of the same file. INT8 engines also
allow FP16 for the layers INT8 cannot run. A tactic timing cache per device and TensorRT version
makes rebuilds fast. Only called from the worker process, with `tensorrt` and `pycuda` imported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from agent.backends.build import CalibrationSet, batch_ranges
from agent.backends.tensorrt.support import EngineRecipe, ParserIssue, Profile, TrtApi, log_level, parser_message
from agent.cache import write_atomically
from agent.errors import BundleError, ModelFormatError

CALIBRATION_BATCH = 8
_log = logging.getLogger("edge-agent.tensorrt")


def make_logger(trt: Any) -> Any:
    """A `trt.ILogger` that routes TensorRT's messages to Python logging and keeps the last errors."""
    class RoutedLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = log_level(severity)
            if level >= logging.ERROR:
                self.errors = (self.errors + [msg.strip()])[-3:]
            _log.log(level, "%s", msg)

    return RoutedLogger()


def parse_onnx(trt: Any, api: TrtApi, logger: Any, source: Path) -> Tuple[Any, Any, Any]:
    """(builder, network, parser) for the ONNX file (the parser owns the weights: keep it while building),
    or `ModelFormatError` with the parser's own messages."""
    builder = trt.Builder(logger)
    flags = 0
    if api.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if api.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        issues = [_issue(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelFormatError(parser_message(source.name, issues))
    return builder, network, parser


def _issue(error: Any) -> ParserIssue:
    """An `IParserError` as plain data; `node_name`/`node_operator` exist from TensorRT 10 on."""
    def text(method: str) -> Optional[str]:
        getter = getattr(error, method, None)
        return str(getter()) if callable(getter) and getter() else None

    code = str(error.code()).rsplit(".", 1)[-1]
    return ParserIssue(code, str(error.desc()), int(error.node()), text("node_name"), text("node_operator"))


def network_inputs(network: Any) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, dims) of every network input, -1 for a dynamic dimension."""
    return [(t.name, tuple(int(d) for d in t.shape)) for t in (network.get_input(i) for i in range(network.num_inputs))]


def has_qdq(trt: Any, network: Any) -> bool:
    """Whether the network carries Q/DQ layers (explicit INT8)."""
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


@dataclass(frozen=True)
class Runtime:
    """The imported `tensorrt` and `pycuda.driver` modules, the API their version has, and the logger."""

    trt: Any
    cuda: Any
    api: TrtApi
    logger: Any


def build(rt: Runtime, parsed: Tuple[Any, Any, Any], recipe: EngineRecipe, calibration: Optional[CalibrationSet],
          timing_cache: Path, calibration_cache: Optional[Path]) -> Tuple[bytes, Dict[str, Any]]:
    """A serialized engine and what the build used (calibration samples); `ModelFormatError` with
    TensorRT's last errors when it fails."""
    trt, api, precision = rt.trt, rt.api, recipe.precision
    builder, network, _ = parsed
    inputs = network_inputs(network)
    profile = recipe.shapes()
    config = builder.create_builder_config()
    if recipe.workspace_mb > 0:
        size = recipe.workspace_mb << 20
        if api.memory_pools:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
        else:
            config.max_workspace_size = size
    if profile:
        config.add_optimization_profile(_trt_profile(builder, profile))
    if not api.strongly_typed:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    info: Dict[str, Any] = {}
    if precision == "int8" and recipe.int8_mode == "entropy":
        if calibration is None:
            raise BundleError("INT8 calibration needs the bundle's calibration data (data.calibration)")
        calibrator = _calibrator(trt, rt.cuda, calibration, inputs, profile, calibration_cache)
        config.int8_calibrator = calibrator  # kept referenced here until the build returns
        info["calibration_samples"] = calibrator.used
        if profile:
            config.set_calibration_profile(_trt_profile(builder, calibrator.profile))
    if recipe.dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = recipe.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names for the IProfiler
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(rt.logger.errors) or "see the TensorRT log"
        raise ModelFormatError(f"TensorRT could not build an engine ({precision}): {detail}")
    write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), info


def _trt_profile(builder: Any, profile: Profile) -> Any:
    trt_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        trt_profile.set_shape(name, low, opt, high)
    return trt_profile


def _calibrator(trt: Any, cuda: Any, calibration: CalibrationSet, inputs: List[Tuple[str, Tuple[int, ...]]],
                profile: Profile,
                cache_path: Optional[Path]) -> Any:
    """An `IInt8EntropyCalibrator2` over full batches of the calibration split (one input networks)."""
    if len(inputs) != 1:
        raise BundleError(f"INT8 calibration feeds one input from the calibration split; the model has "
                          f"{len(inputs)}")
    name, dims = inputs[0]
    samples = np.ascontiguousarray(calibration.load(), dtype=np.float32)
    batch = dims[0] if dims[0] > 0 else min(CALIBRATION_BATCH, len(samples))
    batches = [samples[start:end] for start, end in batch_ranges(len(samples), batch)]
    fixed = (len(batches[0]),) + tuple(batches[0].shape[1:])

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.profile = {name: (fixed, fixed, fixed)} if profile else {}
            self.used = sum(len(b) for b in batches)
            self._pending = iter(batches)
            self._device = cuda.mem_alloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return len(batches[0])

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            chunk = next(self._pending, None)
            if chunk is None:
                return None
            cuda.memcpy_htod(self._device, chunk)
            return [int(self._device)]

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                write_atomically(cache_path, bytes(cache))

    return EntropyCalibrator()

