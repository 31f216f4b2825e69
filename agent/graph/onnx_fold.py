"""Resolve what one pass of ONNX shape inference leaves open, before the layers are read.

Rounds of shape inference alternate with two rewrites of the inference copy of the graph (the file's
own value_info is left out, and taken only for dims that neither inference nor folding resolves):
1. **folding**: a node whose inputs are all known small values (shape arithmetic: Shape, Gather,
   Concat, Equal...; a `Shape` of a tensor whose dims are known) is replaced by a Constant, so the
   next round sees the Reshape targets, pads and conditions it computes;
2. **control flow**: an `If` whose condition folded is replaced by the branch it takes; an `If` whose
   condition stays unknown gets both branches (each the bound candidate of its `If`); a `Loop` or
   `Scan` gets its body once, with the trip count when it is static (else unknown, and flagged).
Inlined nodes are renamed `<parent>/<branch>/<name>` so branches never collide; every layer node keeps
its `Scope` (the branches it sits in, its repeat count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from agent.graph.model import ControlFlow
from agent.graph.onnx_contrib import OUTPUT_TYPE_OF_INPUT, SAME_AS_INPUT, contrib_shapes

FOLD_ELEMENTS = 4096  # values up to this size are folded; larger results stay run-time tensors
MAX_ROUNDS = 12
UNFOLDABLE = frozenset({"If", "Loop", "Scan", "SequenceMap", "RandomNormal", "RandomUniform",
                        "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Constant"})
BranchPath = Tuple[Tuple[str, str], ...]  # (If layer, branch attribute) from the outermost in


@dataclass
class Scope:
    """Where a layer node sits: inside which `If` branches, and how often a loop body runs it."""

    branches: BranchPath = ()
    repeat: Optional[int] = 1  # None: inside a Loop whose trip count is not known


@dataclass
class Expanded:
    """The graph after folding: layer nodes with scopes, the last inferred graph, subgraph constants."""

    nodes: List[Any]
    scopes: List[Scope]
    inferred: Any
    constants: Dict[str, Tuple[Tuple[int, ...], int]]  # initializers of inlined subgraphs: dims, dtype
    control_flow: List[ControlFlow] = field(default_factory=list)


class _State:
    def __init__(self, onnx: Any, light: Any, values: Dict[str, np.ndarray], opset: int) -> None:
        self.onnx, self.light, self.opset = onnx, light, opset
        self.nodes: List[Any] = []
        self.scopes: List[Scope] = []
        # Inference-only nodes emitted right after the layer node of that id: the Identity nodes that
        # give a taken If's outputs, the bindings of a loop body's inputs.
        self.helpers: Dict[int, List[Any]] = {}
        self.replaced: Set[int] = set()  # layer nodes whose If was replaced by its taken branch
        self.values = dict(values)
        self.expanded: Set[str] = set()
        self.constants: Dict[str, Tuple[Tuple[int, ...], int]] = {}
        self.control_flow: List[ControlFlow] = []
        self.inputs: List[str] = []
        self.contributed: Set[str] = set()  # value_info names added by agent.graph.onnx_contrib
        # The file's own value_info: used only where inference leaves a dim open (a stale one never
        # overrides what inference finds).
        self.stored: Dict[str, Any] = {}
        for value in light.value_info:
            self.stored[value.name] = value
        del light.value_info[:]
        for index, node in enumerate(light.node):
            if not node.name:
                node.name = f"{node.op_type}_{index}"
            self.nodes.append(node)
            self.scopes.append(Scope())
        for init in light.initializer:
            if _elements(init.dims) <= FOLD_ELEMENTS:
                self.values[init.name] = onnx.numpy_helper.to_array(init)
        for node in self.nodes:
            if node.op_type == "Constant" and node.output:
                value = _constant_value(onnx, node)
                if value is not None:
                    self.values[node.output[0]] = value


def expand(onnx: Any, light_model: Any, values: Dict[str, np.ndarray], inputs: Sequence[str],
           warnings: List[str]) -> Expanded:
    """Folds and inlines `light_model`'s graph (its nodes are copies, changed in place) to a fixpoint;
    `values` are the given values of some of the model's `inputs`."""
    opset = next((o.version for o in light_model.opset_import if o.domain in ("", "ai.onnx")), 13)
    state = _State(onnx, light_model.graph, values, opset)
    state.inputs = list(inputs)
    inferred = light_model.graph
    for _ in range(MAX_ROUNDS):
        inferred = _infer(state, light_model, warnings)
        shapes = _shapes(inferred)
        changed = _contrib(state, inferred, shapes)
        changed = _fold(state, shapes) or changed
        changed = _inline_known(state, shapes) or changed
        if not changed:  # the file's stored shapes only where folding could not go further
            changed = _stored(state, shapes)
        if not changed:
            changed = _inline_unknown(state, shapes)
        if not changed:
            break
    return Expanded(state.nodes, state.scopes, inferred, state.constants, state.control_flow)


def _infer(state: _State, light_model: Any, warnings: List[str]) -> Any:
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


def _contrib(state: _State, inferred: Any, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
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


def _stored(state: _State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
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


def _fold(state: _State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
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


def _evaluate(state: _State, node: Any, shapes: Dict[str, Tuple[Any, ...]]) -> Optional[List[np.ndarray]]:
    if node.domain not in ("", "ai.onnx") or node.op_type in UNFOLDABLE:
        return None
    if node.op_type in ("Shape", "Size"):
        dims = shapes.get(node.input[0])
        if dims is None or any(not isinstance(d, int) or d <= 0 for d in dims):
            return None
        if node.op_type == "Size":
            return [np.array(_elements(dims), dtype=np.int64)]
        attributes = {a.name: a.i for a in node.attribute}
        start, end = attributes.get("start", 0), attributes.get("end", len(dims))
        return [np.array(dims[start:end] if "end" in attributes else dims[start:], dtype=np.int64)]
    inputs = [state.values.get(name) if name else None for name in node.input]
    if any(name and value is None for name, value in zip(node.input, inputs)):
        return None
    out_dims = shapes.get(node.output[0])
    if out_dims is not None and all(isinstance(d, int) for d in out_dims) and _elements(out_dims) > FOLD_ELEMENTS:
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


def _single_node_model(state: _State, node: Any, feeds: Dict[str, np.ndarray]) -> Any:
    """`node` alone in a model of the graph's opset, so each op runs in the version the file uses."""
    helper = state.onnx.helper
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), None)
              for name, value in feeds.items()]
    outputs = [helper.make_tensor_value_info(name, 0, None) for name in node.output if name]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", state.opset)])


def _inline_known(state: _State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
    """Replaces each If whose condition is known by the branch it takes."""
    changed = False
    for index in range(len(state.nodes)):
        node = state.nodes[index]
        if node.op_type != "If" or index in state.replaced or node.name in state.expanded:
            continue
        condition = state.values.get(node.input[0])
        if condition is None:
            continue
        taken = bool(np.asarray(condition).ravel()[0])
        branch = "then_branch" if taken else "else_branch"
        body = _subgraph(node, branch)
        scope = state.scopes[index]
        prefix = f"{node.name}/{branch}"
        added, outputs = _inline(state, body, prefix, Scope(scope.branches, scope.repeat), index)
        state.helpers[id(node)] = [state.onnx.helper.make_node("Identity", [inner], [outer])
                                   for inner, outer in zip(outputs, node.output)]
        state.replaced.add(index + added)
        state.expanded.add(node.name)
        state.control_flow.append(ControlFlow(node.name, "If", "taken", branch=branch,
                                              reason=f"condition {node.input[0]} folded to {taken}"))
        changed = True
    return changed


def _inline_unknown(state: _State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
    """Inlines both branches of each If left unknown, and the body of each Loop and Scan, once."""
    changed = False
    index = 0
    while index < len(state.nodes):
        node = state.nodes[index]
        if node.op_type not in ("If", "Loop", "Scan") or index in state.replaced or node.name in state.expanded:
            index += 1
            continue
        state.expanded.add(node.name)
        scope = state.scopes[index]
        at = index + 1
        if node.op_type == "If":
            for branch in ("then_branch", "else_branch"):
                added, _ = _inline(state, _subgraph(node, branch), f"{node.name}/{branch}",
                                   Scope(scope.branches + ((node.name, branch),), scope.repeat), at)
                at += added
            steering = _steering_inputs(state, node.input[0])
            given = ", ".join(f"--input {name}=VALUE" for name in steering)
            state.control_flow.append(ControlFlow(node.name, "If", "both", inputs=steering, reason=(
                f"input {', '.join(steering)} chooses the branch of {node.name} ({given} folds it)" if steering
                else f"condition {node.input[0]} is not known before run time")))
        else:
            trips = _trips(state, node, shapes)
            repeat = None if trips is None or scope.repeat is None else trips * scope.repeat
            body = _subgraph(node, "body")
            added, _ = _inline(state, body, f"{node.name}/body", Scope(scope.branches, repeat), at,
                               bind=(node, _bindings(state, node, body)))
            at += added
            state.control_flow.append(ControlFlow(
                node.name, node.op_type, "repeated" if trips is not None else "per_iteration", trips=trips,
                reason="" if trips is not None else "trip count not known before run time"))
        changed = True
        index = at
    return changed


def _steering_inputs(state: _State, name: str) -> List[str]:
    """The model inputs whose values the tensor `name` is computed from (not only their shapes)."""
    producers = {output: node for node in state.nodes for output in node.output if output}
    found: List[str] = []
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in state.inputs and current not in found:
            found.append(current)
        node = producers.get(current)
        if node is not None and node.op_type not in ("Shape", "Size"):
            pending.extend(n for n in node.input if n)
    return sorted(found)


def _trips(state: _State, node: Any, shapes: Dict[str, Tuple[Any, ...]]) -> Optional[int]:
    if node.op_type == "Loop":
        count = state.values.get(node.input[0]) if node.input and node.input[0] else None
        return int(np.asarray(count).ravel()[0]) if count is not None else None
    attributes = {a.name: a for a in node.attribute}
    scan_inputs = int(attributes["num_scan_inputs"].i)
    first = node.input[len(node.input) - scan_inputs]
    axes = list(attributes["scan_input_axes"].ints) if "scan_input_axes" in attributes else [0]
    dims = shapes.get(first)
    if dims is None or not dims:
        return None
    size = dims[axes[0] % len(dims)]
    return size if isinstance(size, int) and size > 0 else None


def _bindings(state: _State, node: Any, body: Any) -> List[Any]:
    """Inference-only nodes giving a loop body's inputs the values of its first iteration."""
    helper, onnx = state.onnx.helper, state.onnx
    names = [v.name for v in body.input]
    nodes: List[Any] = []
    if node.op_type == "Loop":
        nodes.append(helper.make_node("Constant", [], [names[0]], value=onnx.numpy_helper.from_array(
            np.array(0, dtype=np.int64))))
        nodes.append(helper.make_node("Constant", [], [names[1]], value=onnx.numpy_helper.from_array(
            np.array(True))))
        nodes.extend(helper.make_node("Identity", [outer], [inner]) for outer, inner in zip(node.input[2:], names[2:]))
        return nodes
    attributes = {a.name: a for a in node.attribute}
    scan_inputs = int(attributes["num_scan_inputs"].i)
    states = len(node.input) - scan_inputs
    axes = list(attributes["scan_input_axes"].ints) if "scan_input_axes" in attributes else [0] * scan_inputs
    nodes.extend(helper.make_node("Identity", [outer], [inner])
                 for outer, inner in zip(node.input[:states], names[:states]))
    for position, (outer, inner) in enumerate(zip(node.input[states:], names[states:])):
        index_name = f"{inner}__index"
        nodes.append(helper.make_node("Constant", [], [index_name],
                                      value=onnx.numpy_helper.from_array(np.array(0, dtype=np.int64))))
        nodes.append(helper.make_node("Gather", [outer, index_name], [inner], axis=axes[position]))
    return nodes


def _inline(state: _State, body: Any, prefix: str, scope: Scope, at: int,
            bind: Optional[Tuple[Any, List[Any]]] = None) -> Tuple[int, List[str]]:
    """Inserts `body`'s nodes, renamed under `prefix`, at node position `at`; returns (count, outputs)."""
    onnx = state.onnx
    produced = {v.name for v in body.input} | {t.name for t in body.initializer}
    produced.update(name for node in body.node for name in node.output if name)
    mapping = {name: f"{prefix}/{name}" for name in produced}
    for init in body.initializer:
        renamed = mapping[init.name]
        state.constants[renamed] = (tuple(init.dims), init.data_type)
        if _elements(init.dims) <= FOLD_ELEMENTS:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = renamed
            state.light.initializer.append(copy)
            state.values[renamed] = onnx.numpy_helper.to_array(init)
        else:
            state.light.input.append(onnx.helper.make_tensor_value_info(renamed, init.data_type, list(init.dims)))
    for value in body.value_info:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(value)
        copy.name = mapping.get(value.name, value.name)
        state.stored[copy.name] = copy
    new_nodes = []
    for position, node in enumerate(body.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}/{node.name or f'{node.op_type}_{position}'}"
        _rename(copy, mapping)
        if copy.op_type == "Constant" and copy.output:
            value = _constant_value(onnx, copy)
            if value is not None:
                state.values[copy.output[0]] = value
        new_nodes.append(copy)
    if bind is not None:
        owner, bindings = bind
        for binding in bindings:
            binding.output[:] = [mapping.get(n, n) for n in binding.output]
        state.helpers[id(owner)] = bindings
    state.nodes[at:at] = new_nodes
    state.scopes[at:at] = [Scope(scope.branches, scope.repeat) for _ in new_nodes]
    state.replaced = {i + len(new_nodes) if i >= at else i for i in state.replaced}
    return len(new_nodes), [mapping.get(v.name, v.name) for v in body.output]


def _rename(node: Any, mapping: Dict[str, str]) -> None:
    """Renames `node`'s inputs and outputs, and the outer-scope references of its own subgraphs."""
    node.input[:] = [mapping.get(name, name) for name in node.input]
    node.output[:] = [mapping.get(name, name) for name in node.output]
    for attribute in node.attribute:
        graphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for graph in graphs:
            inner = {v.name for v in graph.input} | {t.name for t in graph.initializer}
            inner.update(name for n in graph.node for name in n.output)
            outer = {k: v for k, v in mapping.items() if k not in inner}
            for child in graph.node:
                _rename(child, outer)
            for value in graph.output:
                value.name = outer.get(value.name, value.name)


def _subgraph(node: Any, key: str) -> Any:
    for attribute in node.attribute:
        if attribute.name == key:
            return attribute.g
    raise KeyError(f"{node.name} has no {key}")


def _constant_value(onnx: Any, node: Any) -> Optional[np.ndarray]:
    attribute = node.attribute[0] if node.attribute else None
    if attribute is None:
        return None
    if attribute.name == "value":
        if _elements(attribute.t.dims) > FOLD_ELEMENTS or attribute.t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return np.asarray(onnx.numpy_helper.to_array(attribute.t))
    simple = {"value_float": np.float32(attribute.f), "value_int": np.int64(attribute.i),
              "value_floats": np.array(attribute.floats, dtype=np.float32),
              "value_ints": np.array(attribute.ints, dtype=np.int64)}
    return np.asarray(simple[attribute.name]) if attribute.name in simple else None


def _elements(dims: Any) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count
