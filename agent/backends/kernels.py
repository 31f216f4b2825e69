"""Compute ceilings measured with each runtime's own kernels: one GEMM and one conv per precision.

Tiny one-op models are built in memory, without any converter: ONNX with `onnx.helper` (MatMul and
Conv at FP32; QLinearMatMul and QLinearConv, ONNX Runtime's integer kernels, at INT8), TFLite with
the schema's object API (FULLY_CONNECTED and CONV_2D at FP32 and at INT8, run through XNNPACK as the
backend loads them). Each is loaded through the backend itself (`Backend.load`, its default options)
and its hot call (`Session.bind`) timed on one thread and on all usable cores: the best of `repeats`
calls after one warm-up (the all-core figure never below the one-core one: a busy board's second
core can only add). A runtime's roof at a precision is the better of its GEMM and its conv.
Each runtime is measured in its own child process (`runtime_peaks`), so no runtime stays in the caller.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from agent.backends.registry import get_backend
from agent.device.peaks import ComputeMeasurement, ComputePeak, run_module
from agent.errors import AgentError, WorkerError

RUNTIMES = ("onnxruntime", "tflite")
PRECISIONS = ("fp32", "int8")
GEMM_SIZE = 512       # n of the n x n x n GEMM; `scale` multiplies it
CONV_CHANNELS = 128   # channels in and out of the 3x3 conv; `scale` multiplies them
CONV_SIZE = 56        # its height and width (stride 1, same padding)


@dataclass
class Kernel:
    """One timed model: its file bytes, float feeds, FLOPs per call (2 per MAC) and a description."""

    kind: str         # "gemm" or "conv"
    model: bytes
    feeds: List[np.ndarray]
    flops: int
    description: str


def _descriptions(scale: int) -> Dict[str, Any]:
    """Per kernel at `scale`: its size (the GEMM's n, the conv's channels), FLOPs and description."""
    n, c = GEMM_SIZE * scale, CONV_CHANNELS * scale
    return {"gemm": (n, 2 * n ** 3, f"{n}x{n}x{n}"),
            "conv": (c, 2 * c * c * 9 * CONV_SIZE * CONV_SIZE, f"3x3 {c}->{c} at {CONV_SIZE}x{CONV_SIZE}")}


def onnx_kernels(precision: str, scale: int) -> List[Kernel]:
    """MatMul and Conv (FP32) or QLinearMatMul and QLinearConv (INT8, uint8 activations, int8 weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = _descriptions(scale)
    n, c, side = sizes["gemm"][0], sizes["conv"][0], CONV_SIZE
    int8 = precision == "int8"
    element = TensorProto.UINT8 if int8 else TensorProto.FLOAT

    def weights(shape: Sequence[int]) -> np.ndarray:
        return rng.integers(-127, 128, shape, dtype=np.int8) if int8 else rng.random(shape, dtype=np.float32)

    def activations(shape: Sequence[int]) -> np.ndarray:
        return rng.integers(0, 256, shape, dtype=np.uint8) if int8 else rng.random(shape, dtype=np.float32)

    quant = {"sx": np.float32(0.02), "zx": np.uint8(128), "sw": np.float32(0.01), "zw": np.int8(0),
             "sy": np.float32(0.5), "zy": np.uint8(128)}

    def model(op: str, data_shape: List[int], weight_shape: List[int], **attributes: Any) -> bytes:
        names = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"] if int8 else ["x", "w"]
        constants = {"w": weights(weight_shape), **(quant if int8 else {})}
        graph = helper.make_graph(
            [helper.make_node(op, names, ["y"], **attributes)], op,
            [helper.make_tensor_value_info("x", element, data_shape)],
            [helper.make_tensor_value_info("y", element, None)],
            initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
        onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx_model.ir_version = 8
        return onnx_model.SerializeToString()

    gemm = model("QLinearMatMul" if int8 else "MatMul", [n, n], [n, n])
    conv = model("QLinearConv" if int8 else "Conv", [1, c, side, side], [c, c, 3, 3], pads=[1, 1, 1, 1])
    return [Kernel("gemm", gemm, [activations((n, n))], sizes["gemm"][1],
                   f"{'QLinearMatMul' if int8 else 'MatMul'} {sizes['gemm'][2]}"),
            Kernel("conv", conv, [activations((1, c, side, side))], sizes["conv"][1],
                   f"{'QLinearConv' if int8 else 'Conv'} {sizes['conv'][2]}")]


def tflite_kernels(precision: str, scale: int) -> List[Kernel]:
    """FULLY_CONNECTED and CONV_2D (NHWC, same padding) at FP32 or INT8 (per-tensor, symmetric weights)."""
    rng = np.random.default_rng(0)
    sizes = _descriptions(scale)
    n, c, side = sizes["gemm"][0], sizes["conv"][0], CONV_SIZE
    gemm = _tflite_model("FULLY_CONNECTED", [n, n], [n, n], n, precision)
    conv = _tflite_model("CONV_2D", [1, side, side, c], [c, 3, 3, c], c, precision)
    return [Kernel("gemm", gemm, [rng.random((n, n), dtype=np.float32)], sizes["gemm"][1],
                   f"FULLY_CONNECTED {sizes['gemm'][2]} (XNNPACK)"),
            Kernel("conv", conv, [rng.random((1, side, side, c), dtype=np.float32)], sizes["conv"][1],
                   f"CONV_2D {sizes['conv'][2]} (XNNPACK)")]


def _tflite_model(op: str, data_shape: List[int], weight_shape: List[int], outputs: int, precision: str) -> bytes:
    """A one-operator .tflite file: data input, constant weights and bias, one output of `data_shape`
    with its last dim `outputs`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    int8 = precision == "int8"
    buffers = [schema.BufferT()]
    tensors = []

    def tensor(name: str, shape: List[int], kind: str, scale: Optional[float], data: Optional[np.ndarray]) -> int:
        item = schema.TensorT()
        item.name, item.shape, item.type = name, list(shape), getattr(schema.TensorType, kind)
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
            buffers.append(buffer)
            item.buffer = len(buffers) - 1
        if scale is not None:
            item.quantization = schema.QuantizationParametersT()
            item.quantization.scale, item.quantization.zeroPoint = [scale], [0]
        tensors.append(item)
        return len(tensors) - 1

    rng = np.random.default_rng(0)
    kind = "INT8" if int8 else "FLOAT32"
    weights = rng.integers(-127, 128, weight_shape, dtype=np.int8) if int8 else rng.random(weight_shape,
                                                                                           dtype=np.float32)
    x = tensor("x", data_shape, kind, 0.02 if int8 else None, None)
    w = tensor("w", weight_shape, kind, 0.01 if int8 else None, weights)
    b = tensor("b", [outputs], "INT32" if int8 else "FLOAT32", 0.0002 if int8 else None,
               np.zeros(outputs, dtype=np.int32 if int8 else np.float32))
    y = tensor("y", data_shape[:-1] + [outputs], kind, 0.5 if int8 else None, None)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [x, w, b], [y]
    if op == "CONV_2D":
        options = schema.Conv2DOptionsT()
        options.padding, options.strideH, options.strideW = schema.Padding.SAME, 1, 1
        operator.builtinOptionsType, operator.builtinOptions = schema.BuiltinOptions.Conv2DOptions, options
    else:
        operator.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        operator.builtinOptions = schema.FullyConnectedOptionsT()
    code = schema.OperatorCodeT()
    code.builtinCode = getattr(schema.BuiltinOperator, op)
    code.deprecatedBuiltinCode, code.version = min(code.builtinCode, 127), 1
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, [operator], [x], [y]
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [subgraph], buffers, [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


BUILDERS: Dict[str, Callable[[str, int], List[Kernel]]] = {"onnxruntime": onnx_kernels, "tflite": tflite_kernels}
SUFFIX = {"onnxruntime": ".onnx", "tflite": ".tflite"}


def kernel_gflops(runtime: str, kernel: Kernel, threads: int, repeats: int, folder: Path) -> float:
    """Best GFLOP/s of the kernel's model loaded by the backend at `threads` threads."""
    backend = get_backend(runtime)
    path = folder / f"{kernel.kind}{SUFFIX[runtime]}"
    path.write_bytes(kernel.model)
    session = backend.load(path, threads, dict(backend.option_defaults))
    try:
        call = session.bind(kernel.feeds)
        call()  # warm-up: thread pool start, weight packing
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    finally:
        session.close()
    return kernel.flops / min(times) / 1e9


def measure_runtime(runtime: str, threads: int, repeats: int, scale: int = 1) -> List[ComputePeak]:
    """This runtime's ceiling at each precision, here and now (call it in a child: `runtime_peaks`)."""
    version = get_backend(runtime).status().version or "unknown"
    peaks = []
    with tempfile.TemporaryDirectory(prefix="edge-agent-kernels-") as folder:
        for precision in PRECISIONS:
            rates: Dict[str, float] = {}
            kernels = BUILDERS[runtime](precision, scale)
            for kernel in kernels:
                single = kernel_gflops(runtime, kernel, 1, repeats, Path(folder))
                every = kernel_gflops(runtime, kernel, threads, repeats, Path(folder)) if threads > 1 else single
                rates[f"{kernel.kind}_single"], rates[f"{kernel.kind}_all"] = round(single, 3), round(
                    max(single, every), 3)  # all cores can always do what one does
            peaks.append(ComputePeak(
                runtime=runtime, version=version, precision=precision,
                gflops_single=max(rates["gemm_single"], rates["conv_single"]),
                gflops_all=max(rates["gemm_all"], rates["conv_all"]),
                gemm_gflops_single=rates["gemm_single"], gemm_gflops_all=rates["gemm_all"],
                conv_gflops_single=rates["conv_single"], conv_gflops_all=rates["conv_all"],
                kernels=", ".join(k.description for k in kernels)))
    return peaks


def runtime_peaks(threads: int, repeats: int, scale: int = 1,
                  runtimes: Optional[Sequence[str]] = None) -> ComputeMeasurement:
    """Every available runtime's (or those of `runtimes`) ceilings, each measured in its own child process;
    a runtime whose child fails has none, and `unmeasured` says why (the others keep theirs)."""
    measured = ComputeMeasurement([], {})
    for runtime in runtimes or RUNTIMES:
        if not get_backend(runtime).status().available:
            continue
        try:
            found = run_module("agent.backends.kernels", [runtime, str(threads), str(repeats), str(scale)],
                               f"{runtime} kernel peaks with {threads} threads")
        except WorkerError as exc:
            measured.unmeasured[runtime] = str(exc)
            continue
        measured.peaks.extend(ComputePeak(**entry) for entry in found)
    return measured


def main(arguments: List[str]) -> List[Dict[str, Any]]:
    """`RUNTIME THREADS REPEATS SCALE`: what `runtime_peaks` runs in its child, as JSON."""
    runtime, threads, repeats, scale = arguments[0], int(arguments[1]), int(arguments[2]), int(arguments[3])
    try:
        return [asdict(p) for p in measure_runtime(runtime, threads, repeats, scale)]
    except AgentError as exc:  # the runtime refused a kernel model: say which, exit non-zero
        raise SystemExit(f"{runtime}: {exc}") from exc


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
