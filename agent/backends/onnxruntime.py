"""ONNX Runtime: the CPU execution provider everywhere, other providers listed when the build has them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from agent.backends.base import Backend, BackendStatus, Session, TensorInfo
from agent.errors import ModelFormatError

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


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with an explicit thread count, optimisation level and provider list."""

    name = "onnxruntime"
    formats = ("onnx",)
    option_defaults: Dict[str, Any] = {
        "graph_optimization": "all",
        "inter_op_threads": 1,
        "execution_mode": "sequential",
        "provider": "CPUExecutionProvider",
    }
    option_choices = {"graph_optimization": tuple(_OPT_LEVELS), "execution_mode": ("sequential", "parallel")}

    def status(self) -> BackendStatus:
        try:
            import onnxruntime
        except Exception as exc:  # an ImportError, or a broken wheel failing at import
            return BackendStatus(self.name, False, reason=f"onnxruntime not installed ({exc})",
                                 formats=self.formats)
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
