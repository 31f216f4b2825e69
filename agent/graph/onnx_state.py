"""The state that folding (`agent.graph.onnx_fold`) and inlining (`agent.graph.onnx_control`) share:
the nodes that become layers, each with its `Scope`, the values known so far, the control flow done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from agent.graph.model import ControlFlow

FOLD_ELEMENTS = 4096  # values up to this size are folded; larger results stay run-time tensors
BranchPath = Tuple[Tuple[str, str], ...]  # (If layer, branch attribute) from the outermost in


@dataclass
class Scope:
    """Where a layer node sits: inside which `If` branches, and how often a loop body runs it."""

    branches: BranchPath = ()
    repeat: Optional[int] = 1  # None: inside a Loop whose trip count is not known


class State:
    """One model being folded: its inference copy (`light`), layer nodes and scopes, known values."""

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
            if elements(init.dims) <= FOLD_ELEMENTS:
                self.values[init.name] = onnx.numpy_helper.to_array(init)
        for node in self.nodes:
            if node.op_type == "Constant" and node.output:
                value = constant_value(onnx, node)
                if value is not None:
                    self.values[node.output[0]] = value


def constant_value(onnx: Any, node: Any) -> Optional[np.ndarray]:
    """The value of a Constant node of at most FOLD_ELEMENTS elements, else None."""
    attribute = node.attribute[0] if node.attribute else None
    if attribute is None:
        return None
    if attribute.name == "value":
        if elements(attribute.t.dims) > FOLD_ELEMENTS or attribute.t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return np.asarray(onnx.numpy_helper.to_array(attribute.t))
    simple = {"value_float": np.float32(attribute.f), "value_int": np.int64(attribute.i),
              "value_floats": np.array(attribute.floats, dtype=np.float32),
              "value_ints": np.array(attribute.ints, dtype=np.int64)}
    return np.asarray(simple[attribute.name]) if attribute.name in simple else None


def elements(dims: Any) -> int:
    """The product of `dims`."""
    count = 1
    for dim in dims:
        count *= int(dim)
    return count
