"""The backend interface: availability with a reason, `load(...) -> Session`, `Session.run(...)`.

A `Backend` knows whether its runtime can run here and turns a model file into a `Session`; a
`Session` runs it. Sessions take and return float arrays in the model's input order: a quantized
model's integer inputs and outputs are (de)quantized with the tensors' own parameters, so every
precision is fed and judged with the same data. `Session.bind(feeds)` returns the runtime's own hot
call with the inputs already in place, so a latency loop times the runtime and nothing of ours.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import InputSpecError, UsageError

if TYPE_CHECKING:
    from agent.backends.build import BuildSpec, Prepared
    from agent.bundle import ModelFile

Dim = Union[int, str, None]


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run on this board: its runtime version, or the reason it cannot."""

    name: str
    available: bool
    version: Optional[str] = None
    reason: Optional[str] = None
    formats: Tuple[str, ...] = ()
    details: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "available": self.available, "version": self.version,
                "reason": self.reason, "formats": list(self.formats), "details": self.details}


def import_failure(name: str, package: str, exc: BaseException, formats: Tuple[str, ...]) -> BackendStatus:
    """The status of a runtime whose import raised `exc`: not installed (no such module), or installed but
    failed to load, in the loader's words (a missing library; an address-space limit too small to map it),
    marked `details["failed_to_load"]`. `exc` may join several packages' failures with "; "."""
    parts = [part.strip() for part in str(exc).split("; ") if part.strip()] or [type(exc).__name__]
    if isinstance(exc, ModuleNotFoundError) or all("No module named" in part for part in parts):
        return BackendStatus(name, False, reason=f"{package} not installed ({'; '.join(parts)})", formats=formats)
    return BackendStatus(name, False, reason=f"{package} failed to load: {'; '.join(parts)}", formats=formats,
                         details={"failed_to_load": True})


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the runtime sees it; `quantization` is (scale, zero_point) for int tensors."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str
    quantization: Optional[Tuple[float, int]] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "quantization": list(self.quantization) if self.quantization else None}


def quantize(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float values to the integer dtype of a quantized tensor, with its scale and zero point."""
    assert info.quantization is not None
    scale, zero_point = info.quantization
    bounds = np.iinfo(np.dtype(info.dtype))
    q = np.round(values / np.float32(scale)) + zero_point
    return np.clip(q, bounds.min, bounds.max).astype(info.dtype)


def dequantize(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Integer values of a quantized tensor back to float32."""
    assert info.quantization is not None
    scale, zero_point = info.quantization
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class Session(abc.ABC):
    """A loaded model, ready to run; `inputs`, `outputs` and `configuration` describe it."""

    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    precision: str
    configuration: Dict[str, Any]

    def run(self, feeds: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run once on float inputs (in input order); returns float outputs, dequantized where needed."""
        raw = self._run([self._to_model(x, info) for x, info in zip(feeds, self.inputs)])
        return [dequantize(y, info) if info.quantization else y for y, info in zip(raw, self.outputs)]

    def bind(self, feeds: Sequence[np.ndarray]) -> Callable[[], Any]:
        """The runtime's own run call with `feeds` already in place: the only thing a latency loop times."""
        return self._bind([self._to_model(x, info) for x, info in zip(feeds, self.inputs)])

    def resize(self, shapes: Sequence[Tuple[int, ...]]) -> None:
        """Fix every input's shape before running (a no-op where the runtime takes any shape per call)."""

    def close(self) -> None:
        """Release the runtime's resources."""

    def device_times_ns(self) -> Optional[List[int]]:
        """Per-call device compute times of the calls made since the last `bind` (TensorRT: CUDA events
        around the kernels, without host<->device copies); None where only the host call is timed."""
        return None

    @staticmethod
    def _to_model(x: np.ndarray, info: TensorInfo) -> np.ndarray:
        if info.quantization and np.issubdtype(x.dtype, np.floating):
            return quantize(x, info)
        return np.ascontiguousarray(x, dtype=np.dtype(info.dtype))

    @abc.abstractmethod
    def _run(self, feeds: List[np.ndarray]) -> List[np.ndarray]:
        """Run with inputs already in the model's dtypes; return the model's raw outputs."""

    @abc.abstractmethod
    def _bind(self, feeds: List[np.ndarray]) -> Callable[[], Any]:
        """Return the runtime's zero-argument hot call with `feeds` in place."""


class Backend(abc.ABC):
    """A runtime that can load models of some formats; subclasses import their runtime lazily."""

    name: str
    formats: Tuple[str, ...]
    option_defaults: Dict[str, Any] = {}
    option_choices: Dict[str, Tuple[str, ...]] = {}

    @abc.abstractmethod
    def status(self) -> BackendStatus:
        """Whether the runtime imports and can run here, with its version or the reason it cannot."""

    @abc.abstractmethod
    def load(self, path: Path, threads: int, options: Dict[str, Any]) -> Session:
        """Turn a model file into a ready session with `threads` threads and validated `options`."""

    def derived_precisions(self, model: ModelFile) -> Tuple[str, ...]:
        """Precisions this backend makes on the device from `model` (besides the file's own), e.g. ONNX
        Runtime's INT8 by static quantization; `prepare` makes them."""
        return ()

    def prepare(self, path: Path, spec: BuildSpec, options: Dict[str, Any]) -> Optional[Prepared]:
        """Make what `load` opens for `spec` (a quantized model, an engine), cached; None: load `path` as is.
        Runs in the worker before loading, never inside the timed loop."""
        return None

    def variants(self, precision: str, threads: Sequence[int]) -> List[Tuple[int, Dict[str, Any]]]:
        """The (threads, options) pairs worth racing at `precision` on this board (`edge-agent select`)."""
        return [(count, {}) for count in threads]

    def validate_options(self, options: Dict[str, str]) -> Dict[str, Any]:
        """Check `--option NAME=VALUE` pairs against this backend's options, coercing to each default's type."""
        merged = dict(self.option_defaults)
        for name, text in options.items():
            if name not in self.option_defaults:
                known = ", ".join(sorted(self.option_defaults)) or "none"
                raise UsageError(f"{self.name} has no option {name!r} (its options: {known})")
            merged[name] = _coerce(name, text, self.option_defaults[name])
            choices = self.option_choices.get(name)
            if choices and merged[name] not in choices:
                raise UsageError(f"{self.name} option {name} takes one of {', '.join(choices)}, not {text!r}")
        return merged


def _coerce(name: str, text: Any, default: Any) -> Any:
    if not isinstance(text, str):
        return text
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise UsageError(f"option {name} takes on/off, not {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"option {name} takes an integer, not {text!r}") from None
    return text


def check_feeds(feeds: Sequence[np.ndarray], inputs: Sequence[TensorInfo]) -> None:
    """Raise `InputSpecError` naming the input whose rank or fixed dimensions do not fit the model."""
    if len(feeds) != len(inputs):
        raise InputSpecError(f"the model takes {len(inputs)} inputs, {len(feeds)} were given")
    for x, info in zip(feeds, inputs):
        if len(x.shape) != len(info.shape) or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(info.shape, x.shape)):
            raise InputSpecError(f"input {info.name!r} has shape {list(x.shape)}, the model expects "
                                 f"{list(info.shape)}")
