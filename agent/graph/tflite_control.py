"""What TFLite's IF and WHILE do, read from the file: a condition stored as a constant, a loop's trip count.

A WHILE's trip count is known when its loop is a counter: the cond subgraph compares one loop variable
with a limit (LESS, LESS_EQUAL, GREATER, GREATER_EQUAL, NOT_EQUAL) that is a constant or another loop
variable that the body passes through unchanged; the body adds a constant step to the counter; and the
counter's and limit's first values are constants in the calling subgraph. Anything else: None.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

TFLITE_NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
                9: np.int8, 10: np.float64}
COMPARISONS = ("LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "NOT_EQUAL")
FLIPPED = {"LESS": "GREATER", "LESS_EQUAL": "GREATER_EQUAL", "GREATER": "LESS", "GREATER_EQUAL": "LESS_EQUAL",
           "NOT_EQUAL": "NOT_EQUAL"}


def constant(model: Any, data: bytes, subgraph: Any, index: int) -> Optional[np.ndarray]:
    """The value of tensor `index` of `subgraph` when the file stores it (at most 64 elements), else None."""
    if index < 0 or subgraph.tensors is None or index >= len(subgraph.tensors):
        return None
    tensor = subgraph.tensors[index]
    dtype = TFLITE_NUMPY.get(int(tensor.type))
    if dtype is None or not model.buffers or not 0 < tensor.buffer < len(model.buffers):
        return None
    buffer = model.buffers[tensor.buffer]
    if buffer.data is not None and len(buffer.data) > 0:
        raw = bytes(np.asarray(buffer.data, dtype=np.uint8))
    elif buffer.offset > 1:
        raw = data[int(buffer.offset):int(buffer.offset) + int(buffer.size)]
    else:
        return None
    if len(raw) > 64 * np.dtype(dtype).itemsize or len(raw) % np.dtype(dtype).itemsize:
        return None
    return np.frombuffer(raw, dtype=dtype)


def _op(model: Any, names: Dict[int, str], operator: Any) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    return names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "")


def while_trips(model: Any, data: bytes, names: Dict[int, str], caller: Any, operator: Any) -> Optional[int]:
    """How many times a WHILE operator of subgraph `caller` runs its body, or None when not a counter."""
    options = operator.builtinOptions
    cond, body = model.subgraphs[options.condSubgraphIndex], model.subgraphs[options.bodySubgraphIndex]
    cond_inputs = [int(t) for t in cond.inputs]

    def side(tensor: int) -> Tuple[Optional[int], Optional[int]]:
        """(loop variable position or None, its first value or the constant)."""
        if tensor in cond_inputs:
            position = cond_inputs.index(tensor)
            value = constant(model, data, caller, int(operator.inputs[position]))
            return position, int(value.ravel()[0]) if value is not None and value.size == 1 else None
        value = constant(model, data, cond, tensor)
        return None, int(value.ravel()[0]) if value is not None and value.size == 1 else None

    for compare in cond.operators or []:
        kind = _op(model, names, compare)
        if kind not in COMPARISONS or len(compare.inputs) != 2:
            continue
        (left, start), (right, limit) = side(int(compare.inputs[0])), side(int(compare.inputs[1]))
        left_step = _step(model, data, names, body, left) if left is not None else None
        right_step = _step(model, data, names, body, right) if right is not None else None
        if right_step and not left_step:  # the counter on the right: flip the comparison
            (start, limit), left_step, kind = (limit, start), right_step, FLIPPED[kind]
            right = left
        if not left_step or start is None or limit is None or (right is not None and not _passed(body, right)):
            continue
        return _count(kind, start, limit, left_step)
    return None


def _passed(body: Any, position: int) -> bool:
    """Whether the body returns loop variable `position` unchanged."""
    return int(body.inputs[position]) == int(body.outputs[position])


def _step(model: Any, data: bytes, names: Dict[int, str], body: Any, position: int) -> Optional[int]:
    """The constant the body adds to loop variable `position` (ADD of that input and a constant)."""
    source, result = int(body.inputs[position]), int(body.outputs[position])
    for operator in body.operators or []:
        if _op(model, names, operator) != "ADD" or int(operator.outputs[0]) != result or len(operator.inputs) != 2:
            continue
        others = [int(t) for t in operator.inputs if int(t) != source]
        if len(others) == 1:
            value = constant(model, data, body, others[0])
            if value is not None and value.size == 1:
                return int(value.ravel()[0])
    return None


def _count(kind: str, start: int, limit: int, step: int) -> Optional[int]:
    """Iterations of `counter <kind> limit`, the counter going from `start` by `step`; None when the
    loop would not end (the step goes the wrong way)."""
    if kind == "NOT_EQUAL":
        span = limit - start
        return span // step if span % step == 0 and span // step >= 0 else None
    rising = kind in ("LESS", "LESS_EQUAL")
    if (step > 0) != rising:
        return None
    span = (limit - start) if rising else (start - limit)
    size = abs(step)
    trips = -(-span // size) if kind in ("LESS", "GREATER") else span // size + 1
    return max(0, trips)
