"""ONNX control flow inlined into the graph that becomes layers (`agent.graph.onnx_fold` runs it).

An `If` whose condition folded is replaced by the branch it takes; an `If` whose condition is only
known at run time gets both branches, each layer tagged with its branch (the larger is the bound);
a `Loop` or `Scan` gets its body once, its inputs bound to the first iteration's, each body layer
repeated by the trip count (Loop: the `M` input when it folds; Scan: the scanned axis) or flagged
when it is not known. Inlined nodes are renamed `<parent>/<branch>/<name>` so branches never collide.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from agent.graph.model import ControlFlow
from agent.graph.onnx_state import FOLD_ELEMENTS, Scope, State, constant_value, elements


def inline_known(state: State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
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


def inline_unknown(state: State, shapes: Dict[str, Tuple[Any, ...]]) -> bool:
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


def _steering_inputs(state: State, name: str) -> List[str]:
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


def _trips(state: State, node: Any, shapes: Dict[str, Tuple[Any, ...]]) -> Optional[int]:
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


def _bindings(state: State, node: Any, body: Any) -> List[Any]:
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


def _inline(state: State, body: Any, prefix: str, scope: Scope, at: int,
            bind: Optional[Tuple[Any, List[Any]]] = None) -> Tuple[int, List[str]]:
    """Inserts `body`'s nodes, renamed under `prefix`, at node position `at`; returns (count, outputs)."""
    onnx = state.onnx
    produced = {v.name for v in body.input} | {t.name for t in body.initializer}
    produced.update(name for node in body.node for name in node.output if name)
    mapping = {name: f"{prefix}/{name}" for name in produced}
    for init in body.initializer:
        renamed = mapping[init.name]
        state.constants[renamed] = (tuple(init.dims), init.data_type)
        if elements(init.dims) <= FOLD_ELEMENTS:
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
            value = constant_value(onnx, copy)
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
