"""Pick the reader for a model file by its format (`agent.modelfile.model_format`: TFLite's identifier,
else the suffix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from agent.errors import ModelNotFoundError
from agent.graph.model import Graph
from agent.graph.onnx import read_onnx
from agent.graph.tflite import read_tflite
from agent.modelfile import model_format


def read_graph(path: Union[str, Path], shapes: Optional[Mapping[str, Sequence[int]]] = None,
               values: Optional[Mapping[str, Any]] = None) -> Graph:
    """The layer graph of an ONNX or TFLite file; `shapes` sets input dims and `values` input values
    (arrays that fold the control flow they steer; ONNX only) by input name."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such model file")
    if model_format(path) == "tflite":
        return read_tflite(path, shapes)
    return read_onnx(path, shapes, values)
