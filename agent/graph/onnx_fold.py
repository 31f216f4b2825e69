"""Resolve what one pass of ONNX shape inference leaves open, before the layers are read.

Rounds of shape inference alternate with two rewrites of the inference copy of the graph (the file's
own value_info is left out, and taken only for dims that neither inference nor folding resolves):
1. **folding**: a node whose inputs are all known small values (shape arithmetic: Shape, Gather,
   Concat, Equal...; a `Shape` of a tensor whose dims are known) is replaced by a Constant, so the
   next round sees the Reshape targets, pads and conditions it computes;
2. **control flow** (`agent.graph.onnx_control`): an `If` whose condition folded is replaced by the
   branch it takes; an `If` whose condition stays unknown gets both branches (each the bound
   candidate of its `If`); a `Loop` or `Scan` gets its body once, with the trip count when it is
   static (else unknown, and flagged). Every layer node keeps its `Scope` (the branches it sits in,
   its repeat count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.graph.model import ControlFlow
from agent.graph.onnx_contrib import OUTPUT_TYPE_OF_INPUT, SAME_AS_INPUT, contrib_shapes
from agent.graph.onnx_control import inline_known, inline_unknown
from agent.graph.onnx_state import FOLD_ELEMENTS, Scope, State, elements

MAX_ROUNDS = 32  # rounds end when nothing changes; real models need 1-6
UNFOLDABLE = frozenset({"If", "Loop", "Scan", "SequenceMap", "RandomNormal", "RandomUniform",
                        "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Constant"})


@dataclass
class Expanded:
    """The graph after folding: layer nodes with scopes, the last inferred graph, subgraph constants."""

    nodes: List[Any]
    scopes: List[Scope]
    inferred: Any
    constants: Dict[str, Tuple[Tuple[int, ...], int]]  # initializers of inlined subgraphs: dims, dtype
    control_flow: List[ControlFlow] = field(default_factory=list)


def expand(onnx: Any, light_model: Any, values: Dict[str, np.ndarray], inputs: Sequence[str],
           warnings: List[str], rounds: int = MAX_ROUNDS) -> Expanded:
    """Folds and inlines `light_model`'s graph (its nodes are copies, changed in place) to a fixpoint;
    `values` are the given values of some of the model's `inputs`; `rounds=1`: inference alone."""
    opset = next((o.version for o in light_model.opset_import if o.domain in ("", "ai.onnx")), 13)
    state = State(onnx, light_model.graph, values, opset)
    state.inputs = list(inputs)
    inferred = light_model.graph
    for round_number in range(rounds):
        inferred = _infer(state, light_model, warnings)
        if round_number == rounds - 1:
            break
        shapes = _shapes(inferred)
        changed = _contrib(state, inferred, shapes)
        changed = _fold(state, shapes) or changed
        changed = inline_known(state, shapes) or changed
        if not changed:  # the file's stored shapes only where folding could not go further
            changed = _stored(state, shapes)
        if not changed:
            changed = inline_unknown(state, shapes)
        if not changed:
            break
    return Expanded(state.nodes, state.scopes, inferred, state.constants, state.control_flow)


def _infer(state: State, light_model: Any, warnings: List[str]) -> Any:
    onnx = state.onnx
    graph = onnx.GraphProto(name=state.light.name)
    graph.initializer.extend(state.light.initializer)
    graph.value_info.extend(state.light.value_info)
    for value in state.light.output:  # declared output dims (often -1) would override what is inferred
        tensor_type = value.type.tensor_type
        graph.output.append(onnx.helper.make_tensor_value_info(value.name, tensor_type.elem_type, None)
                            if value.type.HasField("tensor_type") else value)
    given = set(state.values) & {v.name for v in state.light.input}
    graph.input.extend(v for v in state.light.input if v.name not in given)
    for name in sorted(given):
        graph.node.append(onnx.helper.make_node("Constant", [], [name],
                                                value=onnx.numpy_helper.from_array(state.values[name], name)))
    for index, node in enumerate(state.nodes):
        helpers = state.helpers.get(id(node), [])
        if index in state.replaced:
            graph.node.extend(helpers)
            continue
        known = [name for name in node.output if name in state.values]
        if node.op_type != "Constant" and node.output and len(known) == len(node.output):
            for name in known:
                graph.node.append(onnx.helper.make_node(
                    "Constant", [], [name], value=onnx.numpy_helper.from_array(state.values[name], name)))
        else:
            graph.node.append(node)
        graph.node.extend(helpers)
    def infer() -> Any:
        model = onnx.helper.make_model(graph, opset_imports=light_model.opset_import,
                                       ir_version=light_model.ir_version)
        return onnx.shape_inference.infer_shapes(model, data_prop=True).graph

    try:
        return infer()
    except Exception as error:  # inference rejects some valid-to-run models (a stored shape it disagrees with)
        first_line = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    stored = [v for v in graph.value_info if v.name not in state.contributed]
    for value in stored:  # once more without the file's value_info taken so far, keeping the contrib-op shapes
        graph.value_info.remove(value)
    try:
        inferred = infer()
        message = f"ONNX shape inference rejected the file's stored shapes ({first_line}); they were left out"
    except Exception:
        graph.value_info.extend(stored)
        inferred = graph
        message = f"ONNX shape inference failed ({first_line}); only shapes stored in the file are used"
    if message not in warnings:
        warnings.append(message)
    return inferred


def _shapes(inferred: Any) -> Dict[str, Tuple[Any, ...]]:
    shapes: Dict[str, Tuple[Any, ...]] = {}
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):  # a graph output declared without shape keeps the inferred one
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                       for d in tensor_type.shape.dim)
    for init in inferred.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _contrib(state: State, inferred: Any, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
    """Adds the output shapes of com.microsoft ops that shape inference left unknown; True if any."""
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.input) + list(inferred.value_info)}
    types.update({init.name: init.data_type for init in inferred.initializer})
    added = False
    for node in state.nodes:
        for name, dims in contrib_shapes(state.onnx, node, shapes):
            if shapes.get(name) is not None and all(isinstance(d, int) and d > 0 for d in shapes[name]):
                continue
            source = 0 if node.op_type in SAME_AS_INPUT else OUTPUT_TYPE_OF_INPUT.get(node.op_type)
            elem = types.get(node.input[source], 1) if source is not None and source < len(node.input) else 1
            stale = [i for i, v in enumerate(state.light.value_info) if v.name == name]
            for index in reversed(stale):
                del state.light.value_info[index]
            state.light.value_info.append(state.onnx.helper.make_tensor_value_info(name, elem, list(dims)))
            state.contributed.add(name)
            shapes[name] = dims
            added = True
    return added


def _stored(state: State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
    """Takes the file's stored shape of each tensor whose inferred dims are not all known, where the
    stored one knows more of them; True if any was taken."""
    taken = False
    for name, value in list(state.stored.items()):
        dims = value.type.tensor_type.shape.dim if value.type.tensor_type.HasField("shape") else []
        known = sum(1 for d in dims if d.HasField("dim_value") and d.dim_value > 0)
        current = shapes.get(name)
        if not dims or (current is not None and (len(current) != len(dims)
                                                 or sum(1 for d in current if d) >= known)):
            continue
        state.light.value_info.append(value)
        del state.stored[name]
        taken = True
    return taken


def _fold(state: State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
    """Evaluates every node whose inputs are known small values; True when a value was added."""
    changed = False
    for index, node in enumerate(state.nodes):
        if index in state.replaced or not node.output or all(name in state.values for name in node.output):
            continue
        value = _evaluate(state, node, shapes)
        if value is None:
            continue
        for name, result in zip(node.output, value):
            state.values[name] = result
        changed = True
    return changed


def _evaluate(state: State, node: Any, shapes: Dict[str, Tuple[Any, ...]]) -> Optional[List[np.ndarray]]:
    if node.domain not in ("", "ai.onnx") or node.op_type in UNFOLDABLE:
        return None
    if node.op_type in ("Shape", "Size"):
        dims = shapes.get(node.input[0])
        if dims is None or any(not isinstance(d, int) or d <= 0 for d in dims):
            return None
        if node.op_type == "Size":
            return [np.array(elements(dims), dtype=np.int64)]
        attributes = {a.name: a.i for a in node.attribute}
        start, end = attributes.get("start", 0), attributes.get("end", len(dims))
        return [np.array(dims[start:end] if "end" in attributes else dims[start:], dtype=np.int64)]
    inputs = [state.values.get(name) if name else None for name in node.input]
    if any(name and value is None for name, value in zip(node.input, inputs)):
        return None
    out_dims = shapes.get(node.output[0])
    if out_dims is not None and all(isinstance(d, int) for d in out_dims) and elements(out_dims) > FOLD_ELEMENTS:
        return None
    if out_dims is None and node.op_type in ("ConstantOfShape", "Expand", "Tile", "Range"):
        return None  # a result of unknown size may be huge
    feeds = {name: value for name, value in zip(node.input, inputs) if name and value is not None}
    try:
        from onnx.reference import ReferenceEvaluator

        results = ReferenceEvaluator(_single_node_model(state, node, feeds)).run(None, feeds)
    except Exception:  # an op the reference runtime lacks or rejects: left to run time
        return None
    arrays = [np.asarray(r) for r in results]
    if any(a.dtype == object or a.size > FOLD_ELEMENTS for a in arrays):
        return None
    return arrays


def _single_node_model(state: State, node: Any, feeds: Dict[str, np.ndarray]) -> Any:
    """`node` alone in a model of the graph's opset, so each op runs in the version the file uses."""
    helper = state.onnx.helper
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), None)
              for name, value in feeds.items()]
    outputs = [helper.make_tensor_value_info(name, 0, None) for name in node.output if name]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", state.opset)])


