"""Write small .tflite files with the schema's object API (no TensorFlow), for the reader's tests.

Weights are zeros of the right size: the profiler reads shapes, and LiteRT loads such files as any
converter's output (test_graph_tflite checks that a built file runs in the interpreter).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

BYTES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "int8": 1, "int16": 2, "bool": 1}


class TFLiteBuilder:
    """Accumulates tensors, buffers, op codes and operators of one subgraph; `build` gives the bytes."""

    def __init__(self, parent: Optional[TFLiteBuilder] = None) -> None:
        """A builder of the main subgraph; with `parent`, of another subgraph of the parent's file (for
        IF and WHILE), sharing its buffers and op codes."""
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.buffers = parent.buffers if parent else [schema.BufferT()]
        self.tensors: list = []
        self.operators: list = []
        self.codes: List[Tuple[int, int, Optional[str]]] = parent.codes if parent else []
        self.subgraphs: list = []

    def attach(self, child: TFLiteBuilder, inputs: Sequence[int], outputs: Sequence[int], name: str) -> int:
        """Adds `child`'s tensors and operators as a subgraph of this file; returns its subgraph index."""
        subgraph = self.schema.SubGraphT()
        subgraph.tensors, subgraph.operators = child.tensors, child.operators
        subgraph.inputs, subgraph.outputs, subgraph.name = list(inputs), list(outputs), name
        self.subgraphs.append(subgraph)
        return len(self.subgraphs)

    def tensor(self, name: str, shape: Sequence[int], dtype: str = "float32", constant: bool = False,
               scale: Optional[float] = None, zero_point: int = 0, value: Optional[object] = None) -> int:
        """Adds a tensor (constant ones get a zero-filled buffer, or `value`); returns its index."""
        tensor = self.schema.TensorT()
        tensor.name, tensor.shape = name, list(shape)
        tensor.type = getattr(self.schema.TensorType, dtype.upper())
        if constant or value is not None:
            buffer = self.schema.BufferT()
            buffer.data = np.zeros(int(np.prod(shape)) * BYTES[dtype], dtype=np.uint8) if value is None else \
                np.frombuffer(np.asarray(value, dtype=dtype).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        if scale is not None:
            tensor.quantization = self.schema.QuantizationParametersT()
            tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [zero_point]
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def op(self, name: str, inputs: Sequence[int], outputs: Sequence[int], options: object = None,
           old_style_code: bool = False) -> None:
        """Adds an operator: a BuiltinOperator name, else a custom op of that name.

        `old_style_code` writes the code as pre-2.4 files did: in deprecated_builtin_code only.
        """
        builtin = getattr(self.schema.BuiltinOperator, name, None)
        if builtin is None:
            code = (self.schema.BuiltinOperator.CUSTOM, self.schema.BuiltinOperator.CUSTOM, name)
        elif old_style_code:
            code = (0, builtin, None)
        else:
            code = (builtin, min(builtin, 127), None)
        if code not in self.codes:
            self.codes.append(code)
        operator = self.schema.OperatorT()
        operator.opcodeIndex = self.codes.index(code)
        operator.inputs, operator.outputs = list(inputs), list(outputs)
        if options is not None:
            kind = type(options).__name__[:-1]  # Conv2DOptionsT -> Conv2DOptions
            operator.builtinOptionsType = getattr(self.schema.BuiltinOptions, kind)
            operator.builtinOptions = options
        self.operators.append(operator)

    def options(self, kind: str, **values: object) -> object:
        """An options object, e.g. options("Conv2DOptions", strideH=2) -> Conv2DOptionsT."""
        options = getattr(self.schema, kind + "T")()
        for key, value in values.items():
            setattr(options, key, value)
        return options

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """The finished flatbuffer with the TFL3 identifier."""
        import flatbuffers

        schema = self.schema
        subgraph = schema.SubGraphT()
        subgraph.tensors, subgraph.operators = self.tensors, self.operators
        subgraph.inputs, subgraph.outputs, subgraph.name = list(inputs), list(outputs), "main"
        model = schema.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [subgraph] + self.subgraphs, self.buffers
        model.operatorCodes = []
        for builtin, deprecated, custom in self.codes:
            code = schema.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version = (
                builtin, deprecated, custom, 1)
            model.operatorCodes.append(code)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
