"""The TFLite flatbuffer as objects, with or without ai-edge-litert.

ai-edge-litert bundles the schema's generated object API (`schema_py_generated.ModelT`). Where it has
no wheel (Python 3.8 on JetPack 5), the `tflite` package's generated reader is used instead, behind a
view that answers the object API's field names (`fusedActivationFunction` is `FusedActivationFunction()`,
a vector is a list or a numpy array, an absent one None), so `agent.graph.tflite` reads both alike.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np

from agent.errors import ProfileError

Loaded = Tuple[Any, Dict[int, str]]  # the model, and the name of every builtin operator code


def _names(enum: Any) -> Dict[int, str]:
    return {value: key for key, value in vars(enum).items() if not key.startswith("_")}


def schema_reader(file_name: str) -> Callable[[bytes], Loaded]:
    """A function turning a file's bytes into (model, operator names); ProfileError naming what to
    install when neither ai-edge-litert nor the tflite package can be imported."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        pass
    else:
        return lambda data: (schema.ModelT.InitFromPackedBuf(data, 0), _names(schema.BuiltinOperator))
    try:
        import tflite
    except ImportError as error:
        raise ProfileError(f"reading {file_name} needs a TFLite schema: pip install ai-edge-litert "
                           "(Python >= 3.10) or tflite (any Python)") from error
    return lambda data: (_View(tflite.Model.GetRootAsModel(data, 0), tflite), _names(tflite.BuiltinOperator))


class _View:
    """A table of the `tflite` package read by the object API's field names."""

    def __init__(self, table: Any, package: Any) -> None:
        self._table = table
        self._package = package

    def __getattr__(self, name: str) -> Any:
        """The field `name`, read once (kept as an attribute, so the next read does not come here)."""
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._read(name)
        setattr(self, name, value)
        return value

    def _read(self, name: str) -> Any:
        if name == "builtinOptions":
            return self._options()
        method = name[:1].upper() + name[1:]
        table = self._table
        if hasattr(table, method + "Length"):
            if getattr(table, method + "IsNone")():
                return None
            length = getattr(table, method + "Length")()
            if hasattr(table, method + "AsNumpy"):
                return getattr(table, method + "AsNumpy")() if length else np.zeros(0, dtype=np.int32)
            return [self._wrap(getattr(table, method)(index)) for index in range(length)]
        if not hasattr(table, method):
            raise AttributeError(name)
        return self._wrap(getattr(table, method)())

    def _wrap(self, value: Any) -> Any:
        return _View(value, self._package) if hasattr(value, "_tab") else value

    def _options(self) -> Any:
        """The operator's builtin options as their own table type (None when it has none)."""
        kind = self._table.BuiltinOptionsType()
        table = self._table.BuiltinOptions()
        if not kind or table is None:
            return None
        options = getattr(self._package, _names(self._package.BuiltinOptions)[kind])()
        options.Init(table.Bytes, table.Pos)
        return _View(options, self._package)
