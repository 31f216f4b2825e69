"""What kind of model file this is, checked before any runtime sees it.

The format comes from the extension and is confirmed by the first bytes. A `.tflite` file is also
walked as a flatbuffer (root table, subgraphs, buffers) with every offset and length checked against
the file size: older TFLite runtimes (tflite-runtime 2.14, the JetPack 5 path) do not verify the
flatbuffer and read past the end of a truncated file, so a truncated model must be caught here.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List

from agent.errors import ModelFormatError

FORMATS = ("onnx", "tflite")
SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".lite": "tflite"}

# Field indices of the TFLite schema's tables (schema.fbs), counted as the flatbuffer vtable does.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 1, 2, 3, 4
_MODEL_METADATA_BUFFER, _MODEL_METADATA, _MODEL_SIGNATURE_DEFS = 5, 6, 7
_METADATA_NAME = 0
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


def model_format(path: Path) -> str:
    """The format of a model file (`onnx` or `tflite`), from TFLite's identifier in its header or its
    suffix (`.onnx`; `.tflite`, `.lite`), or `ModelFormatError` naming what is wrong."""
    head = _head(path)
    suffix = SUFFIXES.get(path.suffix.lower())
    if head[4:8] == b"TFL3" or suffix == "tflite":
        data = path.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelFormatError(f"{path} is not a TFLite model (no TFL3 identifier in its header)")
        try:
            _check_tflite(_Flatbuffer(data))
        except _OutOfBounds as exc:
            raise ModelFormatError(f"{path} is truncated or corrupt: {exc}") from None
        return "tflite"
    if suffix != "onnx":
        raise ModelFormatError(f"{path} is not a model: neither a .onnx nor a .tflite file (nor a bundle folder)")
    if not head or head[0] != 0x08:
        raise ModelFormatError(f"{path} is not an ONNX model (it does not start with a ModelProto)")
    return "onnx"


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


class _OutOfBounds(Exception):
    pass


class _Flatbuffer:
    """Bounds-checked reads of flatbuffer tables and vectors."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _read(self, fmt: str, pos: int, what: str) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise _OutOfBounds(f"{what} at byte {pos} lies past the end ({len(self.data)} bytes)")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self) -> int:
        return self._read("<I", 0, "the root table offset")

    def field(self, table: int, index: int, what: str) -> int:
        """Absolute position of a table's field, or 0 when the field is absent."""
        vtable = table - self._read("<i", table, what)
        length = self._read("<H", vtable, f"{what}'s vtable")
        slot = 4 + 2 * index
        if slot >= length:
            return 0
        offset = self._read("<H", vtable + slot, f"{what}'s vtable")
        return table + offset if offset else 0

    def vector(self, table: int, index: int, element_size: int, what: str) -> range:
        """Positions of a vector field's elements, after checking the whole vector fits in the file."""
        pos = self.field(table, index, what)
        if not pos:
            return range(0)
        start = pos + self._read("<I", pos, what)
        count = self._read("<I", start, what)
        end = start + 4 + count * element_size
        if end > len(self.data):
            raise _OutOfBounds(f"{what} ({count} entries) ends at byte {end}, past the end ({len(self.data)} bytes)")
        return range(start + 4, end, element_size)

    def tables(self, table: int, index: int, what: str) -> List[int]:
        """Positions of a vector-of-tables field's tables, each checked to lie whole inside the file."""
        found = []
        for i, element in enumerate(self.vector(table, index, 4, what)):
            position = element + self._read("<I", element, f"{what} {i}")
            vtable = position - self._read("<i", position, f"{what} {i}")
            inline_size = self._read("<H", vtable + 2, f"{what} {i}'s vtable")
            if position + inline_size > len(self.data):
                raise _OutOfBounds(f"{what} {i} ends at byte {position + inline_size}, past the end "
                                   f"({len(self.data)} bytes)")
            found.append(position)
        return found

    def u64(self, table: int, index: int, what: str) -> int:
        pos = self.field(table, index, what)
        return self._read("<Q", pos, what) if pos else 0


def _check_tflite(fb: _Flatbuffer) -> None:
    model = fb.root()
    fb.tables(model, _MODEL_OPERATOR_CODES, "operator code")
    fb.vector(model, _MODEL_DESCRIPTION, 1, "description")
    fb.vector(model, _MODEL_METADATA_BUFFER, 4, "metadata buffer")
    fb.tables(model, _MODEL_SIGNATURE_DEFS, "signature def")
    for i, metadata in enumerate(fb.tables(model, _MODEL_METADATA, "metadata")):
        fb.vector(metadata, _METADATA_NAME, 1, f"metadata {i} name")
    for i, subgraph in enumerate(fb.tables(model, _MODEL_SUBGRAPHS, "subgraph")):
        fb.tables(subgraph, _SUBGRAPH_TENSORS, f"subgraph {i} tensor")
        fb.vector(subgraph, _SUBGRAPH_INPUTS, 4, f"subgraph {i} inputs")
        fb.vector(subgraph, _SUBGRAPH_OUTPUTS, 4, f"subgraph {i} outputs")
        fb.tables(subgraph, _SUBGRAPH_OPERATORS, f"subgraph {i} operator")
    for i, buffer in enumerate(fb.tables(model, _MODEL_BUFFERS, "buffer")):
        fb.vector(buffer, _BUFFER_DATA, 1, f"buffer {i} data")
        offset, size = fb.u64(buffer, _BUFFER_OFFSET, f"buffer {i}"), fb.u64(buffer, _BUFFER_SIZE, f"buffer {i}")
        if offset > 1 and offset + size > len(fb.data):
            raise _OutOfBounds(f"buffer {i} data ({size} bytes at {offset}) lies past the end ({len(fb.data)} bytes)")
