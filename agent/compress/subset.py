"""A classifier cut to the classes one deployment needs: the final Gemm/MatMul keeps those output rows, and
every per-class constant between it and the model's first output (a bias Add) keeps the same entries.

The classifier is found by walking back from the first graph output through ops that keep the class axis
(Add of a bias, Softmax, LogSoftmax, Sigmoid, Identity, Relu) to a Gemm or a MatMul whose weight is an
initializer read by no other node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from agent.compress.edit import OnnxModel
from agent.errors import CompressError, UsageError

PASS_THROUGH = ("Add", "Softmax", "LogSoftmax", "Sigmoid", "Identity", "Relu")


@dataclass
class Classifier:
    """The final layer (`node`) and the class-axis ops after it, in graph order."""

    node: Any
    after: List[Any]
    classes: int


def pick_classes(tokens: Sequence[str], labels: Optional[List[str]], classes: int) -> List[int]:
    """`--classes` as class indices: a token that is a label is that label's index, else an integer index;
    a `UsageError` for an unknown, repeated or out-of-range class."""
    chosen = []
    for token in tokens:
        if labels is not None and token in labels:
            index = labels.index(token)
        elif token.lstrip("-").isdigit():
            index = int(token)
        else:
            raise UsageError(f"--classes: {token!r} is neither a label of the model nor a class index")
        if not 0 <= index < classes:
            raise UsageError(f"--classes: class {index} is outside the model's 0..{classes - 1}")
        if index in chosen:
            raise UsageError(f"--classes: class {token!r} is given twice")
        chosen.append(index)
    if not chosen:
        raise UsageError("--classes: give at least one class")
    return chosen


def find_classifier(model: OnnxModel) -> Classifier:
    """The final Gemm/MatMul of the first output, or a `CompressError` saying what stands in the way."""
    graph = model.proto.graph
    writers = model.nodes_by_output()
    tensor: str = graph.output[0].name
    after: List[Any] = []
    while tensor in writers:
        node = writers[tensor]
        if node.op_type in ("Gemm", "MatMul"):
            return _checked(model, node, list(reversed(after)))
        if node.op_type not in PASS_THROUGH:
            break
        after.append(node)
        tensor = next((name for name in node.input if model.constant(name) is None), "")
    raise CompressError(f"{model.path}: the first output does not come from a Gemm or MatMul (through "
                        f"{', '.join(PASS_THROUGH)}): no classifier to cut")


def _checked(model: OnnxModel, node: Any, after: List[Any]) -> Classifier:
    weight = model.constant(node.input[1])
    if weight is None or weight.ndim != 2:
        raise CompressError(f"{model.path}: the classifier {node.name or node.output[0]} has no constant 2-D weight")
    if model.readers(node.input[1]) > 1:
        raise CompressError(f"{model.path}: the classifier's weight is shared with another layer")
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    return Classifier(node, after, int(weight.shape[0] if transposed else weight.shape[1]))


def cut(model: OnnxModel, classifier: Classifier, keep: List[int]) -> None:
    """Keep the `keep` classes, in that order, in the classifier and the per-class constants after it."""
    node = classifier.node
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    weight = model.constant(node.input[1])
    assert weight is not None
    model.add_constant(node.input[1], weight[keep] if transposed else weight[:, keep])
    constants = [name for n in [node] + classifier.after
                 for name in (n.input[2:] if n is node else n.input) if name and model.constant(name) is not None]
    for name in constants:
        value = model.constant(name)
        assert value is not None
        if value.ndim and value.shape[-1] == classifier.classes:
            model.add_constant(name, value[..., keep])
    model.forget_shapes([n.output[0] for n in [node] + classifier.after])
    dims = model.proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) and dims[len(dims) - 1].HasField("dim_value"):
        dims[len(dims) - 1].dim_value = len(keep)
