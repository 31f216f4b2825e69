"""A TensorRT engine as a `Session`: page-locked host buffers, device buffers, one CUDA stream.

It runs TensorRT 8.5+'s named-tensor API (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`: the only one in 10.x) or, before 8.5, the bindings API (io.py). The timed
call is end to end: host->device copies, the kernels, device->host copies and the stream sync; CUDA
events around the kernels give the GPU compute time (`device_times_ns`). `layer_times` runs a second
execution context with an `IProfiler` for per-layer times, so the timed context never carries one.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.backends.base import Session, TensorInfo
from agent.backends.tensorrt.io import BindingIO, TensorIO
from agent.backends.tensorrt.support import LayerTimes


class TensorRTSession(Session):
    """An execution context with page-locked host buffers, device buffers and one CUDA stream."""

    def __init__(self, rt: Any, runtime: Any, engine: Any, precision: str, configuration: Dict[str, Any]) -> None:
        self._rt, self._runtime, self._engine = rt, runtime, engine  # the runtime outlives its engine
        self._io = TensorIO(rt.trt, engine) if rt.api.named_tensors else BindingIO(rt.trt, engine)
        self._context = engine.create_execution_context()
        self._stream = rt.cuda.Stream()
        self._events = (rt.cuda.Event(), rt.cuda.Event())
        self.precision, self.configuration = precision, configuration
        self.inputs = [self._info(n) for n in self._io.names if self._io.is_input(n)]
        self.outputs = [self._info(n) for n in self._io.names if not self._io.is_input(n)]
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, Any] = {}
        self._shapes: List[Tuple[int, ...]] = []
        self._times: List[int] = []

    def _info(self, name: str) -> TensorInfo:
        shape = tuple(d if d >= 0 else None for d in self._io.shape(name))
        return TensorInfo(name, shape, np.dtype(self._io.dtype(name)).name)

    def resize(self, shapes: Sequence[Tuple[int, ...]]) -> None:
        if list(shapes) == self._shapes:
            return
        for info, shape in zip(self.inputs, shapes):
            self._io.set_shape(self._context, info.name, shape)
        for name in self._io.names:
            host = self._rt.cuda.pagelocked_empty(tuple(self._io.context_shape(self._context, name)),
                                                  self._io.dtype(name))
            self._host[name], self._device[name] = host, self._rt.cuda.mem_alloc(max(host.nbytes, 1))
            self._io.bind(self._context, name, int(self._device[name]))
        self._shapes = [tuple(s) for s in shapes]

    def _copy_in(self, feeds: List[np.ndarray]) -> None:
        self.resize([tuple(x.shape) for x in feeds])
        for info, x in zip(self.inputs, feeds):
            np.copyto(self._host[info.name], x)

    def _call(self) -> None:
        """One end-to-end inference: copies in, the kernels between two CUDA events, copies out, sync."""
        cuda, stream = self._rt.cuda, self._stream
        for info in self.inputs:
            cuda.memcpy_htod_async(self._device[info.name], self._host[info.name], stream)
        self._events[0].record(stream)
        self._io.execute(self._context, stream.handle)
        self._events[1].record(stream)
        for info in self.outputs:
            cuda.memcpy_dtoh_async(self._host[info.name], self._device[info.name], stream)
        stream.synchronize()
        self._times.append(int(self._events[1].time_since(self._events[0]) * 1e6))

    def _run(self, feeds: List[np.ndarray]) -> List[np.ndarray]:
        self._copy_in(feeds)
        self._call()
        return [self._host[info.name].copy() for info in self.outputs]

    def _bind(self, feeds: List[np.ndarray]) -> Callable[[], Any]:
        self._copy_in(feeds)
        self._times = []
        return self._call

    def device_times_ns(self) -> Optional[List[int]]:
        return list(self._times)

    def close(self) -> None:
        """Free buffers, context, engine and runtime in that order, while the CUDA context is current."""
        self._host.clear()
        self._device.clear()
        self._context = self._engine = self._runtime = None

    def layer_times(self, runs: int = 10) -> List[Dict[str, Any]]:
        """Per-layer mean times over `runs` synchronous runs of the current inputs, from an `IProfiler`
        on a second execution context (the timed one never carries a profiler)."""
        trt, times = self._rt.trt, LayerTimes()

        class Recorder(trt.IProfiler):  # type: ignore[name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                times.add(layer_name, ms)

        context = self._engine.create_execution_context()
        for info, shape in zip(self.inputs, self._shapes):
            self._io.set_shape(context, info.name, shape)
        recorder = Recorder()
        context.profiler = recorder
        pointers = [int(self._device[name]) for name in self._io.names]
        for _ in range(runs):
            for info in self.inputs:
                self._rt.cuda.memcpy_htod(self._device[info.name], self._host[info.name])
            context.execute_v2(pointers)
            times.runs += 1
        return times.summary()
