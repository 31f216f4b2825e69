"""The parts of the TensorRT backend that need no GPU: version dispatch, cache keys and their
validation, optimisation-profile shapes, parser-error messages, log levels and per-layer times.

Kept free of `tensorrt` and `pycuda` so they are unit-tested on any machine; `tensorrt.py` and
`engine.py` call them with what the real runtime reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.bundle import sha256_file
from agent.cache import read_json
from agent.errors import InputSpecError

Shape = Tuple[int, ...]
Profile = Dict[str, Tuple[Shape, Shape, Shape]]


def parse_version(text: str) -> Tuple[int, ...]:
    """`"8.5.2.2"` -> (8, 5, 2, 2); the numeric prefix of each dotted part."""
    parts = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


@dataclass(frozen=True)
class TrtApi:
    """Which API a TensorRT version has, decided once from its version number."""

    version: Tuple[int, ...]

    @property
    def named_tensors(self) -> bool:
        """8.5+: `num_io_tensors`, `set_input_shape`, `set_tensor_address`, `execute_async_v3` (the only
        way in 10.x, where the bindings API is gone); before: bindings and `execute_async_v2`."""
        return self.version >= (8, 5)

    @property
    def memory_pools(self) -> bool:
        """8.4+: `set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)`; before: `max_workspace_size`."""
        return self.version >= (8, 4)

    @property
    def explicit_batch_flag(self) -> bool:
        """Before 10.0 the network must be created with EXPLICIT_BATCH; 10.x ignores (deprecates) it."""
        return self.version < (10,)

    @property
    def implicit_int8(self) -> bool:
        """Calibrated INT8 (`IInt8EntropyCalibrator2`) exists up to 10.x; TensorRT 11 removed it."""
        return self.version < (11,)

    @property
    def strongly_typed(self) -> bool:
        """TensorRT 11 networks are strongly typed: no FP16/INT8 builder flags, precision comes from the
        model (an FP16 model, a Q/DQ model)."""
        return self.version >= (11,)

    def int8_mode(self, requested: str) -> str:
        """`entropy` (implicit, calibrated) or `qdq` (explicit, from a Q/DQ model) for option `requested`."""
        if requested == "auto":
            return "entropy" if self.implicit_int8 else "qdq"
        if requested == "entropy" and not self.implicit_int8:
            raise ValueError("TensorRT 11 removed implicit INT8 calibration: use int8_calibration=qdq")
        return requested


@dataclass(frozen=True)
class EngineRecipe:
    """Everything that decides what engine TensorRT builds from a model file on a device."""

    precision: str
    int8_mode: Optional[str] = None  # `entropy` (calibrated) or `qdq` (explicit), for INT8
    calibration_sha256: Optional[str] = None  # the calibration split, for `entropy`
    profile: Tuple[Tuple[str, Shape, Shape, Shape], ...] = ()
    workspace_mb: int = 0
    dla_core: int = -1

    def shapes(self) -> Profile:
        """The optimisation profile as {input: (min, opt, max)}."""
        return {name: (low, opt, high) for name, low, opt, high in self.profile}

    def key(self, model_sha256: str, device: str) -> Dict[str, Any]:
        """The cache key: this recipe, the model and the device; not the TensorRT version (it is kept
        beside the engine and checked before loading, so an engine of another version is rebuilt)."""
        return {"model_sha256": model_sha256, "device": device, "precision": self.precision, "int8": self.int8_mode,
                "calibration_sha256": self.calibration_sha256, "workspace_mb": self.workspace_mb,
                "dla_core": self.dla_core, "profile": [[name, list(low), list(opt), list(high)]
                                                       for name, low, opt, high in self.profile]}


def profile_tuple(profile: Profile) -> Tuple[Tuple[str, Shape, Shape, Shape], ...]:
    """A profile dict as the hashable tuple `EngineRecipe.profile` holds."""
    return tuple((name, low, opt, high) for name, (low, opt, high) in sorted(profile.items()))


def key_digest(key: Dict[str, Any]) -> str:
    """16 hex digits naming a cache entry."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def engine_paths(folder: Path, key: Dict[str, Any]) -> Tuple[Path, Path]:
    """The engine file and its metadata file for `key`."""
    stem = f"{key['model_sha256'][:12]}-{key['precision']}-{key_digest(key)}"
    return folder / f"{stem}.engine", folder / f"{stem}.json"


def cached_engine(folder: Path, key: Dict[str, Any], tensorrt_version: str) -> Tuple[Optional[Path], str]:
    """The cached engine for `key` if it may be loaded by this TensorRT, else None and why it is rebuilt.

    An engine built by another TensorRT version is never deserialized (it would fail in verifyHeader,
    or worse): the metadata written next to it says which version built it."""
    engine, meta_path = engine_paths(folder, key)
    meta = read_json(meta_path)
    if not engine.is_file() or meta is None:
        return None, "no engine cached"
    stale = version_mismatch(meta, tensorrt_version)
    if stale:
        return None, f"the cached engine {stale}"
    if meta.get("key") != key:
        return None, "the cached engine was built for other settings"
    if meta.get("sha256") != sha256_file(engine):
        return None, "the cached engine file is damaged"
    return engine, "cached"


def version_mismatch(meta: Optional[Dict[str, Any]], tensorrt_version: str) -> Optional[str]:
    """Why an engine must not be deserialized by this TensorRT (None: same version): engines do not load
    across versions, and trying can crash the process instead of failing."""
    built_by = (meta or {}).get("tensorrt")
    if built_by == tensorrt_version:
        return None
    return f"was built by TensorRT {built_by or 'an unknown version'}, this is {tensorrt_version}"


def engine_meta(key: Dict[str, Any], tensorrt_version: str, engine_sha256: str, build_s: float) -> Dict[str, Any]:
    """What is stored beside an engine: its key, the TensorRT that built it, its sha256."""
    return {"key": key, "tensorrt": tensorrt_version, "sha256": engine_sha256, "build_s": round(build_s, 3)}


def shape_profile(inputs: Sequence[Tuple[str, Sequence[int]]], batches: Sequence[int],
                  overrides: Mapping[str, Sequence[int]], aliases: Sequence[str] = ()) -> Profile:
    """(min, opt, max) per input with a dynamic (-1) dimension: the batch axis spans the batch sizes
    asked for (opt: the first), any other dynamic axis takes `--shape` (by the model's or the bundle's
    input name, `aliases` giving the bundle's names in input order); empty when every shape is fixed."""
    profile: Profile = {}
    for index, (name, dims) in enumerate(inputs):
        if all(d >= 0 for d in dims):
            continue
        given = overrides.get(name)
        if given is None and index < len(aliases):
            given = overrides.get(aliases[index])
        low, opt, high = [], [], []
        for axis, dim in enumerate(dims):
            if dim >= 0:
                values = (dim, dim, dim)
            elif given is not None and len(given) == len(dims):
                values = (int(given[axis]),) * 3
            elif axis == 0:
                values = (min(batches), batches[0], max(batches))
            else:
                raise InputSpecError(f"input {name!r} dimension {axis} is dynamic: give it with --shape "
                                     f"{name}=" + ",".join(str(d) if d >= 0 else "N" for d in dims))
            low.append(values[0])
            opt.append(values[1])
            high.append(values[2])
        profile[name] = (tuple(low), tuple(opt), tuple(high))
    return profile


@dataclass(frozen=True)
class ParserIssue:
    """One error of TensorRT's ONNX parser, as plain data (`IParserError`'s fields)."""

    code: str
    desc: str
    node: int = -1
    node_name: Optional[str] = None
    operator: Optional[str] = None


def parser_message(file_name: str, issues: Sequence[ParserIssue]) -> str:
    """The one-line reason a model is rejected: the parser's own words, node by node."""
    if not issues:
        return f"TensorRT cannot parse {file_name} (the parser reported no detail)"
    parts = []
    for issue in issues:
        where = ""
        if issue.node >= 0 or issue.node_name:
            label = ", ".join(x for x in (issue.node_name, issue.operator and f"op {issue.operator}") if x)
            where = f"node {issue.node}" + (f" ({label})" if label else "") + ": "
        parts.append(f"{where}{issue.code}: {issue.desc.strip()}")
    return f"TensorRT cannot parse {file_name}: " + "; ".join(parts)


_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}


def log_level(severity: Any) -> int:
    """The `logging` level of a TensorRT log severity (INFO is chatty: it goes to DEBUG)."""
    name = getattr(severity, "name", None) or str(severity).rsplit(".", 1)[-1]
    return _LEVELS.get(str(name).upper(), logging.INFO)


class LayerTimes:
    """Per-layer times reported by an `IProfiler`, accumulated over runs."""

    def __init__(self) -> None:
        self.total_ms: Dict[str, float] = {}
        self.order: List[str] = []
        self.runs = 0

    def add(self, layer: str, ms: float) -> None:
        """One `report_layer_time` call."""
        if layer not in self.total_ms:
            self.total_ms[layer] = 0.0
            self.order.append(layer)
        self.total_ms[layer] += float(ms)

    def summary(self) -> List[Dict[str, Any]]:
        """Each layer in execution order: mean ms per run and share of the total."""
        runs = max(self.runs, 1)
        total = sum(self.total_ms.values()) or 1.0
        return [{"name": name, "mean_ms": round(self.total_ms[name] / runs, 6),
                 "share": round(self.total_ms[name] / total, 6)} for name in self.order]
