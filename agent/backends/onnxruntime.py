"""ONNX Runtime: the CPU execution provider everywhere, other providers listed when the build has them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.backends import quantize
from agent.backends.base import Backend, BackendStatus, Session, TensorInfo, import_failure
from agent.backends.build import BuildSpec, Prepared
from agent.backends.quantize import METHODS
from agent.bundle import ModelFile
from agent.errors import BundleError, ModelFormatError

# Providers `select` races, fastest first, when this build of ONNX Runtime has them; FP16 models run
# well on the GPU ones only (the CPU provider has few FP16 kernels), INT8 QDQ on the CPU provider.
_RACED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_FP16_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

# ONNX Runtime's tensor type strings -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeSession(Session):
    """An `InferenceSession`; the hot call is `session.run(None, feed)`."""

    def __init__(self, session: Any, configuration: Dict[str, Any]) -> None:
        self._session = session
        self.configuration = configuration
        self.inputs = [_tensor_info(t) for t in session.get_inputs()]
        self.outputs = [_tensor_info(t) for t in session.get_outputs()]
        self.precision = "fp16" if any(t.dtype == "float16" for t in self.inputs) else "fp32"

    def _feed(self, feeds: List[np.ndarray]) -> Dict[str, np.ndarray]:
        return {info.name: x for info, x in zip(self.inputs, feeds)}

    def _run(self, feeds: List[np.ndarray]) -> List[np.ndarray]:
        return list(self._session.run(None, self._feed(feeds)))

    def _bind(self, feeds: List[np.ndarray]) -> Callable[[], Any]:
        return functools.partial(self._session.run, None, self._feed(feeds))

    def end_profiling(self) -> str:
        """Stop ONNX Runtime's profiler (option `profile_dir`) and return the trace file it wrote."""
        return str(self._session.end_profiling())


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with an explicit thread count, optimisation level and provider list."""

    name = "onnxruntime"
    formats = ("onnx",)
    option_defaults: Dict[str, Any] = {
        "graph_optimization": "all",
        "inter_op_threads": 1,
        "execution_mode": "sequential",
        "provider": "CPUExecutionProvider",
        "quantization": "minmax",
    }
    option_choices = {"graph_optimization": tuple(_OPT_LEVELS), "execution_mode": ("sequential", "parallel"),
                      "quantization": METHODS}

    def derived_precisions(self, model: ModelFile) -> Tuple[str, ...]:
        """INT8 (static QDQ quantization) from an FP32 ONNX file; FP16 too where a GPU provider runs it."""
        if model.format != "onnx" or model.precision != "fp32":
            return ()
        return ("int8", "fp16") if set(self._providers()) & set(_FP16_PROVIDERS) else ("int8",)

    def prepare(self, path: Path, spec: BuildSpec, options: Dict[str, Any]) -> Optional[Prepared]:
        """Quantize (option `quantization`: the calibration method) or convert, through the cache."""
        if spec.precision == "int8":
            if spec.calibration is None:
                raise BundleError("INT8 quantization needs the bundle's calibration data (data.calibration)")
            return quantize.quantize_int8(path, spec.calibration, options["quantization"])
        if spec.precision == "fp16":
            return quantize.convert_fp16(path)
        return None

    def variants(self, precision: str, threads: Sequence[int]) -> List[Tuple[int, Dict[str, Any]]]:
        """Every provider here that runs `precision` well (TensorRT and CUDA EPs when present); thread
        counts matter for the CPU provider only."""
        usable = {"int8": ("CPUExecutionProvider",), "fp16": _FP16_PROVIDERS}.get(precision, _RACED_PROVIDERS)
        providers = [p for p in _RACED_PROVIDERS if p in usable and p in self._providers()]
        return [(count, {"provider": provider}) for provider in providers
                for count in (threads if provider == "CPUExecutionProvider" else threads[-1:])]

    def _providers(self) -> List[str]:
        return list(self.status().details.get("providers", []))

    def status(self) -> BackendStatus:
        try:
            import onnxruntime
        except Exception as exc:  # an ImportError, or a broken wheel failing at import
            return import_failure(self.name, "onnxruntime", exc, self.formats)
        providers = list(onnxruntime.get_available_providers())
        return BackendStatus(self.name, True, version=onnxruntime.__version__, formats=self.formats,
                             details={"providers": providers, "device": onnxruntime.get_device()})

    def load(self, path: Path, threads: int, options: Dict[str, Any]) -> Session:
        import onnxruntime

        level = options["graph_optimization"]
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = options["inter_op_threads"]
        so.execution_mode = (onnxruntime.ExecutionMode.ORT_PARALLEL if options["execution_mode"] == "parallel"
                             else onnxruntime.ExecutionMode.ORT_SEQUENTIAL)
        so.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, _OPT_LEVELS[level])
        so.log_severity_level = 3
        # `profile_dir` is never a user's option: agent.measure.trace adds it to the checked options for
        # `edge-agent profile` (the per-node trace and the graph that runs go into its own folder).
        if options.get("profile_dir"):
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(options["profile_dir"]) / "onnxruntime-profile")
            so.optimized_model_filepath = str(Path(options["profile_dir"]) / "optimized.onnx")
        try:
            session = onnxruntime.InferenceSession(str(path), sess_options=so, providers=[options["provider"]])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/InvalidGraph types
            raise ModelFormatError(f"ONNX Runtime cannot load {path.name}: {_first_line(exc)}") from exc
        configuration = {
            "providers": session.get_providers(),
            "intra_op_threads": threads,
            "inter_op_threads": options["inter_op_threads"],
            "execution_mode": options["execution_mode"],
            "graph_optimization": level,
        }
        return OnnxRuntimeSession(session, configuration)


def _tensor_info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, (int, str)) else None for d in arg.shape)
    return TensorInfo(arg.name, shape, _DTYPES.get(arg.type, arg.type))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
