"""Read an ONNX model into the format-neutral layer graph.

Shapes come from `onnx.shape_inference` run on a light copy of the graph: large weights are handed to
it as typed graph inputs (dims and dtype only), so a 100 MB model is never serialised again, and no
weight is converted to numpy. A symbolic batch dim becomes 1; the user may set any input's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.errors import InputSpecError, ModelFormatError, ProfileError
from agent.graph.model import UNREADABLE, WEIGHT, Dim, Graph, Layer, QuantParams, Tensor, same_pads
from agent.graph.onnx_fold import Expanded, expand
from agent.graph.onnx_ops import SHAPE_PRESERVING, kind_and_roles
from agent.graph.qdq import fold_quantization

# onnx.TensorProto.DataType → dtype names of agent.graph.model.DTYPE_BITS.
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
          8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
          14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8", 18: "float8", 19: "float8",
          20: "float8", 21: "uint4", 22: "int4"}
INFERENCE_KEEPS_ELEMENTS = 1024  # initializers up to this size keep their values for shape inference
ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "LeakyRelu": "leaky_relu",
               "Clip": "clip", "HardSigmoid": "hard_sigmoid"}


def read_onnx(path: Path, shapes: Optional[Mapping[str, Sequence[int]]] = None,
              values: Optional[Mapping[str, Any]] = None) -> Graph:
    """The layer graph of the ONNX file at `path`; `shapes` sets input dims and `values` input values
    (numpy arrays, e.g. a scalar that steers an If) by input name."""
    try:
        import onnx
    except ImportError as error:
        raise ProfileError(f"reading {path.name} needs the onnx package: pip install onnx") from error
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, RuntimeWarning-wrapped errors, OSError
        raise ModelFormatError(f"{path}: not a readable ONNX model ({error})") from error
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelFormatError(f"{path}: not an ONNX model (no graph or IR version)")
    warnings: List[str] = []
    shapes = dict(shapes or {})
    given = _given_values(onnx, model.graph, values or {}, shapes)
    shapes.update({name: list(array.shape) for name, array in given.items() if name not in shapes})
    expanded = _infer_shapes(onnx, model, shapes, given, warnings)
    tensors = _tensors(model.graph, expanded)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        warnings.append(f"{len(external)} weights are stored in external data files; their sizes come "
                        "from the graph and their values were not read")
    initializers = {t.name for t in model.graph.initializer}
    graph = Graph(name=model.graph.name or path.stem, format="onnx", tensors=tensors,
                  layers=_layers(onnx, expanded, tensors, warnings),
                  inputs=[v.name for v in model.graph.input if v.name not in initializers],
                  outputs=[v.name for v in model.graph.output], warnings=warnings,
                  control_flow=expanded.control_flow)
    _record_quant_params(onnx, model.graph, graph)
    fold_quantization(graph)
    return graph


def _given_values(onnx: Any, graph: Any, values: Mapping[str, Any],
                  shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """The given input values at their input's dtype; a single number fills the input's shape (from
    `shapes`, else the model's dims, unknown ones taken as 1)."""
    import numpy as np

    declared = {v.name: v.type.tensor_type for v in graph.input}
    given: Dict[str, Any] = {}
    for name, value in values.items():
        array = np.asarray(value)
        tensor_type = declared.get(name)
        if tensor_type is not None and tensor_type.elem_type:
            array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        if tensor_type is not None and array.ndim == 0 and len(tensor_type.shape.dim) > 0:
            dims = shapes.get(name) or [d.dim_value if d.dim_value > 0 else 1 for d in tensor_type.shape.dim]
            array = np.full(list(dims), array.item(), dtype=array.dtype)
        given[name] = array
    return given


def _infer_shapes(onnx: Any, model: Any, shapes: Dict[str, Sequence[int]], values: Dict[str, Any],
                  warnings: List[str]) -> Expanded:
    """Shape inference on a copy whose large weights are typed inputs, not data, folded and with its
    control flow inlined (`agent.graph.onnx_fold`)."""
    graph = model.graph
    light = onnx.GraphProto(name=graph.name)
    light.node.extend(graph.node)
    light.output.extend(graph.output)
    light.value_info.extend(graph.value_info)
    weights = set()
    for init in graph.initializer:
        weights.add(init.name)
        elements = 1
        for dim in init.dims:
            elements *= dim
        keep_values = elements <= INFERENCE_KEEPS_ELEMENTS and init.data_location != onnx.TensorProto.EXTERNAL
        if keep_values:
            light.initializer.append(init)
        if not keep_values or model.ir_version < 4:  # IR 3 lists every initializer as an input too
            light.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    inputs = [v for v in graph.input if v.name not in weights]
    unknown = sorted((set(shapes) | set(values)) - {v.name for v in inputs})
    if unknown:
        raise InputSpecError(f"shape given for {', '.join(unknown)}, but the model's inputs are "
                             f"{', '.join(v.name for v in inputs)}")
    named = _named_dims(inputs, shapes)
    for value in inputs:
        light.input.append(value)
        _set_input_dims(light.input[-1], shapes.get(value.name), named, warnings)
    light_model = onnx.helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)
    spare = onnx.ModelProto()
    spare.CopyFrom(light_model)  # small: the weights are typed inputs in it, not data
    try:
        return expand(onnx, light_model, values, [v.name for v in inputs], warnings)
    except Exception as error:  # a graph the fold does not handle: profiled from one round of inference
        warnings.append(f"folding shapes and control flow failed ({error!r}); one round of ONNX shape "
                        "inference is used")
        return expand(onnx, spare, {}, [v.name for v in inputs], warnings, rounds=1)


def _named_dims(inputs: Sequence[Any], shapes: Mapping[str, Sequence[int]]) -> Dict[str, int]:
    """The size of each symbolic dim name that a given shape fixes (`batch`, `sequence`...), so the
    other inputs that name it take the same size."""
    named: Dict[str, int] = {}
    for value in inputs:
        given = shapes.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if given is not None and len(given) == len(dims):
            named.update({dim.dim_param: int(size) for dim, size in zip(dims, given) if dim.dim_param})
    return named


def _set_input_dims(value: Any, user_dims: Optional[Sequence[int]], named: Dict[str, int],
                    warnings: List[str]) -> None:
    """Writes the user's dims into a graph input, a size another given input fixes for the same dim
    name, or 1 into a symbolic batch; warns about the rest."""
    tensor_type = value.type.tensor_type
    if user_dims is not None and not tensor_type.HasField("shape"):  # rank not stored: take the user's
        for _ in user_dims:
            tensor_type.shape.dim.add()
    dims = tensor_type.shape.dim
    if user_dims is not None:
        if len(user_dims) != len(dims):
            raise InputSpecError(f"input {value.name} has rank {len(dims)}, but the shape given has "
                                 f"{len(user_dims)} dims: {list(user_dims)}")
        for dim, size in zip(dims, user_dims):
            dim.dim_value = int(size)
        return
    for index, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            continue
        label = dim.dim_param or "?"
        if dim.dim_param in named:
            dim.dim_value = named[dim.dim_param]
        elif index == 0:
            dim.dim_value = 1
            warnings.append(f"input {value.name}: symbolic batch dim '{label}' set to 1")
        else:
            warnings.append(f"input {value.name}: dim {index} '{label}' is not known; give the input's "
                            "shape to count the layers that depend on it")


def _tensors(graph: Any, expanded: Expanded) -> Dict[str, Tensor]:
    """Every tensor with its shape and dtype: inferred values, then initializers and Constant outputs."""
    tensors: Dict[str, Tensor] = {}
    inferred = expanded.inferred
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tensor_type = value.type.tensor_type
        shape: Optional[Tuple[Dim, ...]] = None
        if tensor_type.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                          for d in tensor_type.shape.dim)
        known = tensors.get(value.name)
        if known is not None and known.shape is not None and (shape is None or not tensor_type.elem_type):
            continue  # a graph output declared without shape or type: keep what inference found
        tensors[value.name] = Tensor(value.name, shape, DTYPES.get(tensor_type.elem_type, "unknown"))
    for init in graph.initializer:
        tensors[init.name] = Tensor(init.name, tuple(init.dims), DTYPES.get(init.data_type, "unknown"), True)
    for name, (dims, data_type) in expanded.constants.items():
        tensors[name] = Tensor(name, dims, DTYPES.get(data_type, "unknown"), True)
    for node in expanded.nodes:
        if node.op_type == "Constant" and node.output and node.attribute:
            tensors[node.output[0]] = _constant_tensor(node.output[0], node.attribute[0])
    return tensors


def _constant_tensor(name: str, attribute: Any) -> Tensor:
    """The tensor a Constant node makes, from its one attribute, without reading its values."""
    if attribute.name in ("value", "sparse_value"):
        value = attribute.t if attribute.name == "value" else attribute.sparse_tensor.values
        dims = attribute.t.dims if attribute.name == "value" else attribute.sparse_tensor.dims
        return Tensor(name, tuple(dims), DTYPES.get(value.data_type, "unknown"), True)
    listed = {"value_floats": len(attribute.floats), "value_ints": len(attribute.ints),
              "value_strings": len(attribute.strings)}
    shape = (listed[attribute.name],) if attribute.name in listed else ()
    dtype = {"value_float": "float32", "value_floats": "float32", "value_int": "int64",
             "value_ints": "int64"}.get(attribute.name, "string")
    return Tensor(name, shape, dtype, True)


def _layers(onnx: Any, expanded: Expanded, tensors: Dict[str, Tensor], warnings: List[str]) -> List[Layer]:
    """One layer per node in file order (topological by the ONNX spec), inlined subgraphs after their
    op, Constant nodes left out."""
    layers: List[Layer] = []
    seen = set()
    for index, (node, scope) in enumerate(zip(expanded.nodes, expanded.scopes)):
        if node.op_type == "Constant":
            continue
        name = node.name or f"{node.op_type}_{index}"
        if name in seen:
            name = f"{name}_{index}"
        seen.add(name)
        kind, roles = kind_and_roles(node.op_type, node.domain)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        layer = Layer(name, node.op_type, kind, list(node.input), list(node.output), roles,
                      branches=scope.branches, repeat=scope.repeat)
        try:
            layer.attributes = _normalise(layer, attributes, tensors)
        except UNREADABLE as error:  # a malformed node: reported, and its work left uncounted
            warnings.append(f"layer {name}: attributes not readable ({error!r})")
        for tensor_name in layer.outputs:
            tensors.setdefault(tensor_name, Tensor(tensor_name, None, "unknown"))
        source = tensors.get(layer.inputs[0]) if layer.inputs else None
        result = tensors.get(layer.outputs[0]) if layer.outputs else None
        if kind in SHAPE_PRESERVING and source is not None and result is not None and result.shape is None:
            result.shape, result.dtype = source.shape, source.dtype
        layers.append(layer)
    return layers


def _shape(tensors: Dict[str, Tensor], name: str) -> Tuple[Dim, ...]:
    tensor = tensors.get(name)
    return tensor.shape if tensor is not None and tensor.shape is not None else ()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _normalise(layer: Layer, raw: Dict[str, Any], tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    """Kind-specific attributes in the neutral form the cost formulas read."""
    op, kind = layer.op, layer.kind
    attributes: Dict[str, Any] = {"layout": "NCHW"}
    if kind in ("conv", "conv_transpose"):
        weight = _shape(tensors, layer.inputs[layer.positions.index(WEIGHT)])  # IndexError: no weight
        group = int(raw.get("group", 1))
        kernel = [int(k) for k in raw.get("kernel_shape", weight[2:])]
        if len(weight) >= 2 and all(isinstance(d, int) for d in weight[:2]):
            first, second = int(weight[0]), int(weight[1])
            attributes["out_channels"], attributes["in_channels"] = (
                (first, second * group) if kind == "conv" else (second * group, first))
        attributes.update(group=group, activation=ACTIVATIONS.get(_text(raw.get("activation", ""))))
        attributes.update(_window(raw, kernel, layer, tensors))
    elif kind == "matmul":
        transposed = bool(raw.get("transA", 0))
        gemm = 0 if transposed else 1
        axis = {"Gemm": gemm, "QGemm": gemm, "FusedGemm": gemm, "FusedMatMul": -2 if transposed else -1}.get(op, -1)
        attributes["k_from"] = (0, axis)
    elif kind == "pool":
        attributes["pool"] = "max" if "Max" in op else "lp" if "Lp" in op else "avg"
        attributes["global"] = "Global" in op
        if not attributes["global"]:
            attributes.update(_window(raw, [int(k) for k in raw["kernel_shape"]], layer, tensors))
    elif kind == "resize":
        attributes["mode"] = _text(raw.get("mode", "nearest"))
    elif kind == "reduce":
        attributes["reduce"] = op.replace("Reduce", "").lower()
    elif kind == "recurrent":
        layout = int(raw.get("layout", 0))
        attributes.update(cell="lstm" if "LSTM" in op else op.lower(), hidden_size=raw.get("hidden_size"),
                          directions=2 if _text(raw.get("direction", "")) == "bidirectional" else 1,
                          time_axis=layout, batch_axis=1 - layout, matrix_inputs=(1, 2),
                          peephole_inputs=(7,) if op == "LSTM" else ())
    elif kind == "lrn":
        attributes["size"] = int(raw.get("size", 1))
    elif kind == "einsum":
        attributes["equation"] = _text(raw["equation"])
    elif kind in ("attention", "attention_packed"):
        attributes["heads"] = raw.get("num_heads", raw.get("q_num_heads"))
        attributes["qkv_sizes"] = [int(size) for size in raw.get("qkv_hidden_sizes", [])]
    elif kind in ("quantize", "dequantize"):
        attributes["axis"] = int(raw.get("axis", 1))
    elif kind == "control_flow":
        attributes["subgraphs"] = sorted(key for key, value in raw.items() if hasattr(value, "node"))
    return attributes


def _window(raw: Dict[str, Any], kernel: List[int], layer: Layer,
            tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    """kernel, strides, dilations and explicit pads of a conv or pool, "same" auto-padding resolved."""
    rank = len(kernel)
    strides = [int(s) for s in raw.get("strides", [1] * rank)]
    dilations = [int(d) for d in raw.get("dilations", [1] * rank)]
    pads: Optional[List[int]] = [int(p) for p in raw.get("pads", [0] * (2 * rank))]
    auto_pad = _text(raw.get("auto_pad", "NOTSET"))
    if auto_pad.startswith("SAME"):
        pads = same_pads(_shape(tensors, layer.inputs[0])[2:], _shape(tensors, layer.outputs[0])[2:],
                         kernel, strides, dilations, extra_at_end=auto_pad == "SAME_UPPER")
    return {"kernel": kernel, "strides": strides, "dilations": dilations, "pads": pads}


def _record_quant_params(onnx: Any, source: Any, graph: Graph) -> None:
    """Scale and zero point of each tensor a Q/DQ node quantizes, read from small constants only."""
    constants = {t.name: t for t in source.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
    constants.update({n.output[0]: n.attribute[0].t for n in source.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for layer in graph.layers:
        if layer.op not in ("QuantizeLinear", "DequantizeLinear") or len(layer.inputs) < 2:
            continue
        scale = constants.get(layer.inputs[1])
        zero = constants.get(layer.inputs[2]) if len(layer.inputs) > 2 else None
        if scale is None:
            continue
        quantized = graph.tensors.get(layer.outputs[0] if layer.op == "QuantizeLinear" else layer.inputs[0])
        if quantized is not None:
            axis = layer.attributes.get("axis", 1) if scale.dims else None
            quantized.quant = QuantParams(
                tuple(float(v) for v in onnx.numpy_helper.to_array(scale).ravel()),
                tuple(int(v) for v in onnx.numpy_helper.to_array(zero).ravel()) if zero is not None else (0,),
                axis)

