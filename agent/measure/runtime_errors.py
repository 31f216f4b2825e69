"""One line from a runtime's own exception, naming the model layer and op where it failed.

ONNX Runtime nests its messages ("... running If node. Name:'If_0' Status Message: ... running LSTM
node. Name:'.../LSTM' Status Message: Input X must have 3 dimensions only"); TFLite says "Node number 5
(CONV_2D) failed to invoke". The line leads with the innermost layer and op, then the runtime's reason.
"""

from __future__ import annotations

import re

ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: ")
TFLITE_NODE = re.compile(r"Node number (\d+) \((\w+)\) failed to (\w+)")


def describe(exc: BaseException) -> str:
    """`Type: layer NAME (op OP): reason`, or `Type: message` when the message names no layer."""
    text = " ".join(str(exc).split())
    nodes = ORT_NODE.findall(text)
    if nodes:
        op, name = nodes[-1]
        reason = text[[m.end() for m in ORT_NODE.finditer(text)][-1]:]
        inside = " inside " + " > ".join(f"{o} {n}" for o, n in nodes[:-1]) if len(nodes) > 1 else ""
        return f"{type(exc).__name__}: layer {name} (op {op}){inside}: {reason}"
    match = TFLITE_NODE.search(text)
    if match:
        return f"{type(exc).__name__}: layer {match.group(2).lower()}_{match.group(1)} (op {match.group(2)}) " \
               f"failed to {match.group(3)}: {text}"
    return f"{type(exc).__name__}: {text}"
