"""Edits of an ONNX model in memory: its constant weights as numpy, a node replaced by a chain of new ones,
initializers no node reads any more dropped, and the file written back. onnx is imported on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from agent.errors import ModelFormatError


class OnnxModel:
    """One ONNX model being edited: `proto` (the ModelProto) and its initializers by name."""

    def __init__(self, path: Union[str, Path]) -> None:
        import onnx

        try:
            self.proto = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
            raise ModelFormatError(f"{path}: not a readable ONNX model ({exc})") from exc
        self.path = Path(path)
        self.initializers = {tensor.name: tensor for tensor in self.proto.graph.initializer}

    def constant(self, name: str) -> Optional[np.ndarray]:
        """The initializer `name` as a numpy array; None when `name` is not an initializer."""
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def readers(self, name: str) -> int:
        """How many node inputs read the tensor `name`."""
        return sum(list(node.input).count(name) for node in self.proto.graph.node)

    def add_constant(self, name: str, value: np.ndarray) -> str:
        """Add (or replace) the initializer `name`; returns the name."""
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if name in self.initializers:
            self.proto.graph.initializer.remove(self.initializers[name])
        self.proto.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, name: str, **attributes: Any) -> Any:
        """A new NodeProto (not yet in the graph)."""
        from onnx import helper

        return helper.make_node(op, list(inputs), [output], name=name, **attributes)

    def replace(self, node: Any, chain: List[Any]) -> None:
        """Put `chain` where `node` was, in order; the tensors `node` wrote lose their stale shape entries."""
        nodes = self.proto.graph.node
        index = list(nodes).index(node)
        del nodes[index]
        for offset, new in enumerate(chain):
            nodes.insert(index + offset, new)
        self.forget_shapes(node.output)

    def forget_shapes(self, names: Sequence[str]) -> None:
        """Drop the inferred shapes recorded for `names` (their shapes changed)."""
        info = self.proto.graph.value_info
        for entry in [e for e in info if e.name in set(names)]:
            info.remove(entry)

    def drop_unread(self) -> None:
        """Remove initializers that no node reads and the graph does not return."""
        read = {name for node in self.proto.graph.node for name in node.input}
        read |= {output.name for output in self.proto.graph.output}
        for name in [n for n in self.initializers if n not in read]:
            self.proto.graph.initializer.remove(self.initializers.pop(name))

    def save(self, path: Union[str, Path]) -> Path:
        """Drop the initializers nothing reads and write the model to `path`."""
        self.drop_unread()
        path = Path(path)
        path.write_bytes(self.proto.SerializeToString())
        return path

    def nodes_by_output(self) -> Dict[str, Any]:
        """Each node by the name of its first output."""
        return {node.output[0]: node for node in self.proto.graph.node if node.output}
