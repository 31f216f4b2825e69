"""TFLite (LiteRT): `ai-edge-litert` where it installs, `tflite-runtime` where only that exists.

XNNPACK is the default CPU delegate; `--option xnnpack=off` runs the builtin kernels only. The hot
call is `interpreter.invoke()` with the inputs already set, as TFLite's own benchmark_model times it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.backends.base import Backend, BackendStatus, Session, TensorInfo, import_failure
from agent.errors import ModelFormatError

_RUNTIMES = (("ai_edge_litert", "ai_edge_litert.interpreter"), ("tflite_runtime", "tflite_runtime.interpreter"))


def import_interpreter() -> Tuple[Any, str, str]:
    """The interpreter module of the first TFLite runtime that imports: (module, package name, version)."""
    import importlib

    failures = []
    for package, module_name in _RUNTIMES:
        try:
            module = importlib.import_module(module_name)
            version = getattr(importlib.import_module(package), "__version__", "unknown")
            return module, package, version
        except Exception as exc:  # tflite-runtime on numpy 2 fails with AttributeError, not ImportError
            failures.append(f"{package}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise ImportError("; ".join(failures))


class TfliteSession(Session):
    """A TFLite `Interpreter`; inputs are bound by position, resized where their signature is dynamic."""

    def __init__(self, interpreter: Any, configuration: Dict[str, Any]) -> None:
        self._interpreter = interpreter
        self.configuration = configuration
        self._input_details = interpreter.get_input_details()
        self._output_details = interpreter.get_output_details()
        self.inputs = [_tensor_info(d) for d in self._input_details]
        self.outputs = [_tensor_info(d) for d in self._output_details]
        self.precision = _precision(interpreter.get_tensor_details())

    def resize(self, shapes: Sequence[Tuple[int, ...]]) -> None:
        current = [tuple(int(d) for d in detail["shape"]) for detail in self._input_details]
        if list(shapes) == current:
            return
        for detail, shape in zip(self._input_details, shapes):
            self._interpreter.resize_tensor_input(detail["index"], list(shape), strict=True)
        self._interpreter.allocate_tensors()
        self._input_details = self._interpreter.get_input_details()
        self._output_details = self._interpreter.get_output_details()

    def _set_inputs(self, feeds: List[np.ndarray]) -> None:
        for detail, x in zip(self._input_details, feeds):
            self._interpreter.set_tensor(detail["index"], x)

    def _run(self, feeds: List[np.ndarray]) -> List[np.ndarray]:
        self._set_inputs(feeds)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]).copy() for d in self._output_details]

    def _bind(self, feeds: List[np.ndarray]) -> Callable[[], Any]:
        self._set_inputs(feeds)
        return self._interpreter.invoke


class TfliteBackend(Backend):
    """TFLite with XNNPACK on or off and an explicit thread count."""

    name = "tflite"
    formats = ("tflite",)
    option_defaults: Dict[str, Any] = {"xnnpack": True}

    def status(self) -> BackendStatus:
        try:
            _, package, version = import_interpreter()
        except ImportError as exc:
            return import_failure(self.name, "a TFLite runtime (ai-edge-litert or tflite-runtime)", exc, self.formats)
        return BackendStatus(self.name, True, version=version, formats=self.formats, details={"package": package})

    def load(self, path: Path, threads: int, options: Dict[str, Any]) -> Session:
        module, package, _ = import_interpreter()
        resolver = module.OpResolverType.AUTO if options["xnnpack"] else \
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads,
                                             experimental_op_resolver_type=resolver)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"TFLite cannot load {path.name}: {str(exc).strip().splitlines()[0]}") from exc
        configuration = {"package": package, "threads": threads, "xnnpack": bool(options["xnnpack"])}
        return TfliteSession(interpreter, configuration)


def _tensor_info(detail: Dict[str, Any]) -> TensorInfo:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(int(d) if d >= 0 else None for d in dims)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    quantization: Optional[Tuple[float, int]] = None
    if scale and dtype in ("int8", "uint8", "int16"):
        quantization = (float(scale), int(zero_point))
    return TensorInfo(detail["name"], shape, dtype, quantization)


def _precision(tensors: List[Dict[str, Any]]) -> str:
    """int8 when the graph holds quantized int8/uint8 tensors, fp16 when it holds float16 ones, else fp32."""
    dtypes = {np.dtype(t["dtype"]).name for t in tensors if t.get("quantization", (0.0, 0))[0]}
    if dtypes & {"int8", "uint8"}:
        return "int8"
    if any(np.dtype(t["dtype"]).name == "float16" for t in tensors):
        return "fp16"
    return "fp32"
