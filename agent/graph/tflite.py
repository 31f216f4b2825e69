"""Read a TFLite flatbuffer into the format-neutral layer graph, without TensorFlow.

The file is parsed with the schema bundled in ai-edge-litert (`schema_py_generated`, object API), or
the `tflite` package's where ai-edge-litert is absent (`agent.graph.tflite_schema`).
Operators are read before any interpreter touches the model, so they are the model's own ops, not
the delegate nodes XNNPACK puts in their place. Shapes are the ones stored in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, cast

from agent.errors import InputSpecError, ModelFormatError
from agent.graph.model import DATA, UNREADABLE, WEIGHT, ControlFlow, Dim, Graph, Layer, QuantParams, Tensor, same_pads
from agent.graph.qdq import fold_quantization
from agent.graph.tflite_control import constant, while_trips
from agent.graph.tflite_ops import FUSED_ACTIVATIONS, MATRIX_INPUTS, PEEPHOLE_INPUTS, REDUCE_OPS, kind_and_roles
from agent.graph.tflite_schema import schema_reader

DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
          7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
          15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4",
          21: "float8", 22: "float8"}
CUSTOM = 32


def read_tflite(path: Path, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Graph:
    """The layer graph of the main subgraph of the TFLite file at `path` (the schema of ai-edge-litert,
    or of the tflite package where it is absent: `agent.graph.tflite_schema`)."""
    reader = schema_reader(path.name)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"{path}: not a TFLite model (no TFL3 file identifier)")
    try:
        model, names = reader(data)
        if not model.subgraphs or not model.operatorCodes and model.subgraphs[0].operators:
            raise ModelFormatError(f"{path}: TFLite file without a subgraph or operator codes")
    except ModelFormatError:
        raise
    except Exception as error:  # flatbuffers reads past the end of a truncated file in many ways
        raise ModelFormatError(f"{path}: truncated or corrupt TFLite file ({error!r})") from error
    try:
        return _graph(path, model, names, dict(shapes or {}), data)
    except UNREADABLE as error:  # an index or field that does not hold together
        raise ModelFormatError(f"{path}: inconsistent TFLite file ({error!r})") from error


def _graph(path: Path, model: Any, names: Dict[int, str], shapes: Dict[str, Sequence[int]], data: bytes) -> Graph:
    subgraph = model.subgraphs[0]
    tensors, tensor_names = _tensors(model, subgraph, len(data))
    warnings = _dynamic_dim_warnings(subgraph, tensor_names)
    graph = Graph(name=_text(subgraph.name) or path.stem, format="tflite", tensors=tensors, layers=[],
                  inputs=[tensor_names[i] for i in subgraph.inputs if i >= 0],
                  outputs=[tensor_names[i] for i in subgraph.outputs if i >= 0], warnings=warnings)
    _check_user_shapes(graph, shapes)
    reading = _Reading(model, names, data, graph)
    _add_operators(reading, subgraph, tensor_names, "", (), 1)
    unread = [_text(s.name) or f"#{i}" for i, s in enumerate(model.subgraphs) if i > 0 and i not in reading.read]
    if unread:
        warnings.append(f"subgraphs {', '.join(unread)} are not run by an IF or WHILE and not counted")
    fold_quantization(graph)
    return graph


@dataclass
class _Reading:
    """One file being read: its model, operator names, bytes, the graph so far, the subgraphs inlined."""

    model: Any
    names: Dict[int, str]
    data: bytes
    graph: Graph
    read: Set[int] = field(default_factory=set)


def _add_operators(reading: _Reading, subgraph: Any, tensor_names: List[str], prefix: str,
                   branches: Tuple[Tuple[str, str], ...], repeat: Optional[int]) -> None:
    """Each operator of `subgraph` as a layer; an IF's or WHILE's subgraphs inlined after it."""
    graph = reading.graph
    for index, operator in enumerate(subgraph.operators or []):
        layer = _layer(index, operator, reading.model, reading.names, tensor_names, graph.tensors, graph.warnings)
        layer.name, layer.branches, layer.repeat = prefix + layer.name, branches, repeat
        graph.layers.append(layer)
        if layer.op in ("IF", "WHILE") and operator.builtinOptions is not None:
            _control_flow(reading, subgraph, operator, layer, tensor_names)


def _control_flow(reading: _Reading, caller: Any, operator: Any, layer: Layer, tensor_names: List[str]) -> None:
    """An IF: the branch a stored condition takes, else both (each tagged, the larger the bound); a
    WHILE: its body × the trip count when `while_trips` finds it, else once (flagged)."""
    options, graph = operator.builtinOptions, reading.graph
    args = [tensor_names[i] if i >= 0 else "" for i in operator.inputs]
    if layer.op == "IF":
        subgraphs = {"then_branch": options.thenSubgraphIndex, "else_branch": options.elseSubgraphIndex}
        condition = constant(reading.model, reading.data, caller, int(operator.inputs[0]))
        if condition is not None and condition.size:
            branch = "then_branch" if bool(condition.ravel()[0]) else "else_branch"
            _inline(reading, subgraphs[branch], args[1:], f"{layer.name}/{branch}/", layer.branches, layer.repeat)
            graph.control_flow.append(ControlFlow(layer.name, "IF", "taken", branch=branch,
                                                  reason=f"condition {args[0]} is stored in the file"))
            return
        for branch, index in subgraphs.items():
            _inline(reading, index, args[1:], f"{layer.name}/{branch}/", layer.branches + ((layer.name, branch),),
                    layer.repeat)
        steering = graph.upstream_inputs(args[0])
        graph.control_flow.append(ControlFlow(layer.name, "IF", "both", inputs=steering, reason=(
            f"input {', '.join(steering)} chooses the branch of {layer.name}" if steering
            else f"condition {args[0]} is not known before run time")))
        return
    reading.read.add(options.condSubgraphIndex)  # its comparison is not counted: the body is the work
    trips = while_trips(reading.model, reading.data, reading.names, caller, operator)
    repeat = None if trips is None or layer.repeat is None else trips * layer.repeat
    _inline(reading, options.bodySubgraphIndex, args, f"{layer.name}/body/", layer.branches, repeat)
    graph.control_flow.append(ControlFlow(layer.name, "WHILE", "repeated" if trips is not None else "per_iteration",
                                          trips=trips, reason="" if trips is not None else
                                          "its loop is not a counter with constant bounds"))


def _inline(reading: _Reading, index: int, args: List[str], prefix: str, branches: Tuple[Tuple[str, str], ...],
            repeat: Optional[int]) -> None:
    """Subgraph `index`'s operators as layers named `prefix` + their own; its inputs are `args`."""
    reading.read.add(index)
    subgraph = reading.model.subgraphs[index]
    tensors, names = _tensors(reading.model, subgraph, len(reading.data))
    inputs = [int(i) for i in subgraph.inputs]
    renamed = []
    for position, name in enumerate(names):
        if position in inputs and inputs.index(position) < len(args):
            renamed.append(args[inputs.index(position)])
            continue
        tensor = tensors[name]
        tensor.name = prefix + name
        reading.graph.tensors[tensor.name] = tensor
        renamed.append(tensor.name)
    _add_operators(reading, subgraph, renamed, prefix, branches, repeat)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _tensors(model: Any, subgraph: Any, file_size: int) -> Tuple[Dict[str, Tensor], List[str]]:
    """All tensors of the subgraph, names made unique, constants marked by a non-empty buffer."""
    tensors: Dict[str, Tensor] = {}
    names: List[str] = []
    for index, source in enumerate(subgraph.tensors or []):
        name = _text(source.name) or f"tensor_{index}"
        if name in tensors:
            name = f"{name}#{index}"
        buffer = model.buffers[source.buffer] if model.buffers and 0 < source.buffer < len(model.buffers) \
            else None
        if buffer is not None and buffer.offset > 1 and buffer.offset + buffer.size > file_size:
            raise IndexError(f"tensor {name} points past the end of the file")
        constant = buffer is not None and (buffer.data is not None and len(buffer.data) > 0
                                           or buffer.offset > 1)
        shape: Tuple[Dim, ...] = tuple(int(d) if d >= 0 else "?" for d in source.shape) \
            if source.shape is not None else ()
        tensors[name] = Tensor(name, shape, DTYPES.get(source.type, "unknown"), constant,
                               _quant_params(source.quantization))
        names.append(name)
    return tensors, names


def _quant_params(quantization: Any) -> Optional[QuantParams]:
    if quantization is None or quantization.scale is None or len(quantization.scale) == 0:
        return None
    zero_points = quantization.zeroPoint if quantization.zeroPoint is not None else [0]
    axis = int(quantization.quantizedDimension) if len(quantization.scale) > 1 else None
    return QuantParams(tuple(float(s) for s in quantization.scale), tuple(int(z) for z in zero_points), axis)


def _dynamic_dim_warnings(subgraph: Any, names: List[str]) -> List[str]:
    """A warning per input dim the file marks dynamic (-1 in its shape signature), batch aside."""
    warnings = []
    for index in subgraph.inputs if subgraph.inputs is not None else []:
        signature = subgraph.tensors[index].shapeSignature
        for axis, size in enumerate(signature if signature is not None else []):
            if size < 0 and axis > 0:
                warnings.append(f"input {names[index]}: dim {axis} is dynamic; counted at the size "
                                f"stored in the file, {subgraph.tensors[index].shape[axis]}")
    return warnings


def _check_user_shapes(graph: Graph, shapes: Dict[str, Sequence[int]]) -> None:
    """TFLite shapes are fixed in the file: a user shape must name an input and match it."""
    for name, dims in shapes.items():
        tensor = graph.tensors.get(name)
        if name not in graph.inputs or tensor is None:
            raise InputSpecError(f"shape given for {name}, but the model's inputs are {', '.join(graph.inputs)}")
        if tuple(int(d) for d in dims) != tensor.shape:
            raise InputSpecError(f"input {name} is stored as {list(tensor.shape or ())} in the TFLite file; "
                                 f"the static profile cannot resize it to {list(dims)}")


def _op_name(code: Any, names: Dict[int, str]) -> str:
    # Codes below 127 live in the deprecated int8 field of old files; TFLite itself takes the max.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == CUSTOM:
        return _text(code.customCode) or "CUSTOM"
    return names.get(builtin, f"BUILTIN_{builtin}")


def _layer(index: int, operator: Any, model: Any, names: Dict[int, str], tensor_names: List[str],
           tensors: Dict[str, Tensor], warnings: List[str]) -> Layer:
    op = _op_name(model.operatorCodes[operator.opcodeIndex], names)
    kind, roles = kind_and_roles(op)
    inputs = [tensor_names[i] if i >= 0 else "" for i in (operator.inputs if operator.inputs is not None else [])]
    outputs = [tensor_names[i] for i in (operator.outputs if operator.outputs is not None else []) if i >= 0]
    layer = Layer(f"{op.lower()}_{index}", op, kind, inputs, outputs, roles)
    try:
        layer.attributes = _normalise(layer, operator.builtinOptions, tensors)
    except UNREADABLE as error:  # a malformed operator: reported, and its work left uncounted
        warnings.append(f"layer {layer.name}: attributes not readable ({error!r})")
    return layer


def _shape(tensors: Dict[str, Tensor], name: str) -> Tuple[Dim, ...]:
    tensor = tensors.get(name) if name else None
    return tensor.shape if tensor is not None and tensor.shape is not None else ()


def _normalise(layer: Layer, options: Any, tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    """Kind-specific attributes in the neutral form; the layout of every TFLite op is NHWC."""
    op, kind = layer.op, layer.kind
    attributes: Dict[str, Any] = {"layout": "NHWC"}
    activation = getattr(options, "fusedActivationFunction", 0)
    attributes["activation"] = FUSED_ACTIVATIONS.get(activation)
    if kind in ("conv", "conv_transpose"):
        attributes.update(_conv(layer, options, tensors))
    elif kind == "pool":
        attributes["pool"] = {"MAX_POOL_2D": "max", "L2_POOL_2D": "lp"}.get(op, "avg")
        kernel = [options.filterHeight, options.filterWidth]
        attributes["kernel"] = kernel
        attributes.update(_window(layer, options, kernel, [1, 1], tensors))
    elif kind == "matmul":
        adjoint = bool(getattr(options, "adjX", False))
        attributes["k_from"] = (1, -1) if op == "FULLY_CONNECTED" else (0, -2 if adjoint else -1)
    elif kind == "resize":
        attributes["mode"] = "linear" if op == "RESIZE_BILINEAR" else "nearest"
    elif kind == "reduce":
        attributes["reduce"] = REDUCE_OPS[op]
    elif kind == "recurrent":
        time_major = bool(getattr(options, "timeMajor", False))
        forget_weights = _shape(tensors, layer.inputs[2 if "LSTM" in op else 1])
        attributes.update(cell="lstm" if "LSTM" in op else "svdf" if op == "SVDF" else "rnn",
                          matrix_inputs=MATRIX_INPUTS[op],
                          hidden_size=forget_weights[0] if forget_weights else None,
                          directions=2 if op.startswith("BIDIRECTIONAL") else 1,
                          time_axis=None if "SEQUENCE" not in op else 0 if time_major else 1,
                          batch_axis=1 if time_major and "SEQUENCE" in op else 0,
                          peephole_inputs=PEEPHOLE_INPUTS.get(op, ()))
    elif kind == "lrn":
        attributes["size"] = 2 * int(options.radius) + 1
    elif kind == "control_flow":
        attributes["subgraphs"] = sorted(f"#{getattr(options, key)}" for key in
                                         ("thenSubgraphIndex", "elseSubgraphIndex", "condSubgraphIndex",
                                          "bodySubgraphIndex", "initSubgraphIndex") if hasattr(options, key))
    return attributes


def _conv(layer: Layer, options: Any, tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    """Channels, group and window of CONV_2D/3D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV."""
    # Constant weights and the channel axis of the data have static sizes in every TFLite conv.
    weight = cast(Tuple[int, ...], _shape(tensors, layer.inputs[layer.positions.index(WEIGHT)]))
    data = cast(Tuple[int, ...], _shape(tensors, layer.inputs[layer.positions.index(DATA)]))
    if layer.op == "CONV_3D":  # weights [kd, kh, kw, in/group, out]
        kernel, per_group, out_channels = list(weight[:3]), weight[3], weight[4]
    elif layer.op == "CONV_3D_TRANSPOSE":  # weights [kd, kh, kw, out, in]
        kernel, per_group, out_channels = list(weight[:3]), weight[4], weight[3]
    elif layer.op == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, in * multiplier]
        kernel, per_group, out_channels = list(weight[1:3]), 1, weight[3]
    else:  # weights [out, kh, kw, in/group]
        kernel, per_group, out_channels = list(weight[1:3]), weight[3], weight[0]
    in_channels = data[-1] if layer.kind == "conv" else per_group
    group = in_channels // per_group if layer.kind == "conv" else 1
    dilations = [getattr(options, f"dilation{a}Factor", 1) for a in ("D", "H", "W")][-len(kernel):]
    attributes = {"kernel": kernel, "in_channels": in_channels, "out_channels": out_channels, "group": group}
    attributes.update(_window(layer, options, kernel, dilations, tensors))
    return attributes


def _window(layer: Layer, options: Any, kernel: List[int], dilations: List[int],
            tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    """Strides, dilations and explicit pads, SAME padding resolved from the stored shapes."""
    strides = [getattr(options, f"stride{a}", 1) for a in ("D", "H", "W")][-len(kernel):]
    source = _shape(tensors, layer.inputs[layer.positions.index(DATA)])[1:-1]
    result = _shape(tensors, layer.outputs[0])[1:-1]
    if layer.kind == "conv_transpose":  # padding is that of the conv it is the gradient of
        source, result = result, source
    pads: Optional[List[int]] = [0] * (2 * len(kernel))
    if options.padding == 0:  # Padding.SAME
        pads = same_pads(source, result, kernel, strides, dilations)
    return {"strides": strides, "dilations": dilations, "pads": pads}
