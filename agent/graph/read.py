"""Pick the reader for a model file by its contents (TFLite's identifier) or its suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from agent.errors import ModelFormatError, ModelNotFoundError
from agent.graph.model import Graph
from agent.graph.onnx import read_onnx
from agent.graph.tflite import read_tflite

SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".lite": "tflite"}


def model_format(path: Path) -> str:
    """"tflite" when the file carries the TFL3 identifier, else by suffix; ModelFormatError otherwise."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    raise ModelFormatError(f"{path}: neither an .onnx nor a .tflite model")


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
