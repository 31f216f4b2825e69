"""Dense MACs of a real model by a second method, independent of agent.profile: the runtimes' own view.

ONNX: ONNX Runtime runs the model once with profiling on and graph optimizations off, so every node
that ran (those inside the If branch taken included) is reported with its input and output shapes;
the textbook formula is applied to each. TFLite: the interpreter (no delegate) gives every operator
with its tensors' shapes after allocation. Nothing here imports `agent`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

Shapes = List[List[int]]


def _prod(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _conv(i: Shapes, o: Shapes, w: Shapes) -> int:
    """out elements × (C_in / group) × kernel: the weight is [C_out, C_in/group, k...]."""
    return _prod(o[0]) * _prod(w[1][1:])


def _qlinear_conv(i: Shapes, o: Shapes, w: Shapes) -> int:
    return _prod(o[0]) * _prod(w[3][1:])


def _matmul(i: Shapes, o: Shapes, w: Shapes) -> int:
    """out elements × K, K the last dim of A (A [..., M, K] @ B [..., K, N], batch dims broadcast)."""
    return _prod(o[0]) * w[0][-1]


def _gemm(i: Shapes, o: Shapes, w: Shapes) -> int:
    """M × N × K; K is A's elements over M whether A is transposed or not."""
    return _prod(o[0]) * (_prod(w[0]) // o[0][0])


def _recurrent(gates: int) -> Callable[[Shapes, Shapes, Shapes], int]:
    """T × B × directions × gates × (I + H) × H, from X [T, B, I] and Y [T, directions, B, H]."""
    def count(i: Shapes, o: Shapes, w: Shapes) -> int:
        steps, batch, features = w[0]
        directions, hidden = o[0][1], o[0][-1]
        return steps * batch * directions * gates * (features + hidden) * hidden
    return count


def _conv_transpose(i: Shapes, o: Shapes, w: Shapes) -> int:
    """in elements × (C_out / group) × kernel: the weight is [C_in, C_out/group, k...]."""
    return _prod(w[0]) * _prod(w[1][1:])


def _einsum(node: object) -> Callable[[Shapes, Shapes, Shapes], int]:
    """Two operands, no ellipsis: one multiply-add per point of the space of all their indices."""
    def count(i: Shapes, o: Shapes, w: Shapes) -> int:
        terms = node.attribute[0].s.decode().replace(" ", "").split("->")[0].split(",")  # type: ignore[attr-defined]
        sizes = {letter: size for term, shape in zip(terms, w) for letter, size in zip(term, shape)}
        return _prod(sizes.values()) if len(terms) == 2 else 0
    return count


def _packed_attention(i: Shapes, o: Shapes, w: Shapes) -> int:
    """X [B, S, C] @ W [C, 3D], then Q·Kᵀ (B·S·S·D) and P·V (B·S·S·D)."""
    batch, length, channels = w[0]
    hidden = w[1][1] // 3
    return batch * length * channels * 3 * hidden + 2 * batch * length * length * hidden


def _multi_head_attention(i: Shapes, o: Shapes, w: Shapes) -> int:
    """Q [B, S, D], K [B, L, D], V [B, L, Dv]: B·S·L·D for the scores, B·S·L·Dv for the context."""
    (batch, length, depth), keys, values = w[0], w[1], w[2]
    return batch * length * keys[1] * depth + batch * length * keys[1] * values[2]


# Each formula gets the node's run-time input shapes, output shapes, and all its input shapes (those
# ONNX Runtime leaves out of its profile, pre-packed constant weights, read from the model file).
ONNX_FORMULAS: Dict[str, Callable[[Shapes, Shapes, Shapes], int]] = {
    "Conv": _conv, "ConvInteger": _conv, "FusedConv": _conv, "FusedGemm": _gemm, "QLinearConv": _qlinear_conv,
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul, "MatMulInteger": _matmul, "QLinearMatMul": _matmul, "Gemm": _gemm, "QGemm": _gemm,
    "LSTM": _recurrent(4), "GRU": _recurrent(3), "RNN": _recurrent(1), "DynamicQuantizeLSTM": _recurrent(4),
    "Einsum": _matmul, "Attention": _packed_attention, "MultiHeadAttention": _multi_head_attention,
}


def _model_view(path: Path) -> Tuple[Dict[str, object], Dict[str, List[int]]]:
    """Every node of the model and its subgraphs by name, and the shape of every stored constant."""
    import onnx

    model = onnx.load(str(path))
    nodes: Dict[str, object] = {}
    constants: Dict[str, List[int]] = {}

    def walk(graph: object) -> None:
        for init in graph.initializer:  # type: ignore[attr-defined]
            constants[init.name] = list(init.dims)
        for node in graph.node:  # type: ignore[attr-defined]
            nodes[node.name] = node
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                constants[node.output[0]] = list(node.attribute[0].t.dims)
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    walk(sub)
    walk(model.graph)
    return nodes, constants


def onnx_reference(path: Path, feeds: Mapping[str, np.ndarray]) -> Tuple[int, Dict[str, int]]:
    """Dense MACs of one run of the ONNX model at `path` on `feeds`, and the count of each op that ran."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "reference")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, dict(feeds))
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes, constants = _model_view(path)
    total, ops = 0, {}  # type: int, Dict[str, int]
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        op = args["op_name"]
        ops[op] = ops.get(op, 0) + 1
        if op not in ONNX_FORMULAS:
            continue
        inputs = [list(next(iter(t.values()))) for t in args["input_type_shape"]]
        outputs = [list(next(iter(t.values()))) for t in args["output_type_shape"]]
        node = nodes.get(event["name"][:-len("_kernel_time")])
        every = inputs
        if node is not None:  # the node's own inputs in order: constants from the file, the rest as run
            ran = iter(inputs)
            every = [constants[name] if name in constants else next(ran, []) for name in node.input]  # type: ignore[attr-defined]
        formula = _einsum(node) if op == "Einsum" else ONNX_FORMULAS[op]
        total += formula(inputs, outputs, every)
    return total, ops


def tflite_reference(path: Path) -> Tuple[int, Dict[str, int]]:
    """Dense MACs of the TFLite model at `path` from the interpreter's operators and tensor shapes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interpreter.get_tensor_details()}
    total, ops = 0, {}  # type: int, Dict[str, int]
    for op in interpreter._get_ops_details():  # the only per-operator view the Python API has
        name = op["op_name"]
        ops[name] = ops.get(name, 0) + 1
        i = [shapes.get(int(t), []) for t in op["inputs"]]
        out = _prod(shapes[int(op["outputs"][0])])
        if name == "CONV_2D":  # weights [C_out, kh, kw, C_in/group]
            total += out * _prod(i[1][1:])
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, C_out]
            total += out * _prod(i[1][1:3])
        elif name == "FULLY_CONNECTED":  # weights [units, K]
            total += out * i[1][-1]
        elif name == "BATCH_MATMUL":
            total += out * i[0][-1]
        elif name == "TRANSPOSE_CONV":  # weights [C_out, kh, kw, C_in], data is input 2
            total += _prod(i[2]) * _prod(i[1][:3])
        elif name == "SVDF":  # batch × filters × (input + memory): the feature and time filters
            total += i[0][0] * (_prod(i[1]) + _prod(i[2]))
        elif name in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM"):  # steps × batch × 4 × (I + H) × H
            hidden = i[2][0]
            total += _prod(i[0][:-1]) * 4 * (i[0][-1] + i[6][-1]) * hidden
    return total, ops
