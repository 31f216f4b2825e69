"""An engine's inputs and outputs through the API its TensorRT version has.

TensorRT 8.5 added named I/O tensors (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`); 10.x removed the bindings API
(`num_bindings`, `binding_is_input`, `set_binding_shape`, `execute_async_v2`). `TensorIO` speaks the
first, `BindingIO` the second; `TrtApi.named_tensors` picks one. Both list tensors in the engine's
I/O order, which is also the order `execute_v2` takes device pointers in.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple


class TensorIO:
    """Named tensors: TensorRT 8.5 and later (the only way in 10.x)."""

    def __init__(self, trt: Any, engine: Any) -> None:
        self._trt, self._engine = trt, engine
        self.names: List[str] = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, name: str) -> bool:
        """Whether the tensor is an engine input."""
        return self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def shape(self, name: str) -> Tuple[int, ...]:
        """The engine's shape of the tensor, -1 where it is dynamic."""
        return tuple(self._engine.get_tensor_shape(name))

    def dtype(self, name: str) -> Any:
        """The numpy dtype of the tensor."""
        return self._trt.nptype(self._engine.get_tensor_dtype(name))

    def set_shape(self, context: Any, name: str, shape: Sequence[int]) -> None:
        """Fix an input's shape on a context."""
        context.set_input_shape(name, tuple(shape))

    def context_shape(self, context: Any, name: str) -> Tuple[int, ...]:
        """The tensor's shape on a context, once its inputs' shapes are set."""
        return tuple(context.get_tensor_shape(name))

    def bind(self, context: Any, name: str, pointer: int) -> None:
        """Point the tensor at device memory."""
        context.set_tensor_address(name, pointer)

    def execute(self, context: Any, stream_handle: int) -> None:
        """Enqueue the engine on the stream."""
        if not context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")


class BindingIO:
    """Bindings: TensorRT before 8.5 (JetPack 5.0's 8.4)."""

    def __init__(self, trt: Any, engine: Any) -> None:
        self._trt, self._engine = trt, engine
        self.names: List[str] = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        self._pointers: List[int] = [0] * len(self.names)

    def is_input(self, name: str) -> bool:
        """Whether the binding is an engine input."""
        return bool(self._engine.binding_is_input(self.names.index(name)))

    def shape(self, name: str) -> Tuple[int, ...]:
        """The engine's shape of the binding, -1 where it is dynamic."""
        return tuple(self._engine.get_binding_shape(self.names.index(name)))

    def dtype(self, name: str) -> Any:
        """The numpy dtype of the binding."""
        return self._trt.nptype(self._engine.get_binding_dtype(self.names.index(name)))

    def set_shape(self, context: Any, name: str, shape: Sequence[int]) -> None:
        """Fix an input's shape on a context."""
        context.set_binding_shape(self.names.index(name), tuple(shape))

    def context_shape(self, context: Any, name: str) -> Tuple[int, ...]:
        """The binding's shape on a context, once its inputs' shapes are set."""
        return tuple(context.get_binding_shape(self.names.index(name)))

    def bind(self, context: Any, name: str, pointer: int) -> None:
        """Remember the device pointer of the binding for the next execution."""
        self._pointers[self.names.index(name)] = pointer

    def execute(self, context: Any, stream_handle: int) -> None:
        """Enqueue the engine on the stream."""
        if not context.execute_async_v2(bindings=self._pointers, stream_handle=stream_handle):
            raise RuntimeError("TensorRT execute_async_v2 failed (see the TensorRT log)")
