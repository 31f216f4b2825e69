"""What a model is fed: resolved input shapes, and data from the bundle, from files, or generated.

Shapes come from the runtime's view of the model. `--shape NAME=D1,D2,...` fixes an input's shape; a
symbolic first (batch) dimension takes the measurement's batch size; any other unresolved dimension
is an `InputSpecError` naming the input and the dimension. Data for the first input comes from the
bundle's evaluation split when its samples fit the input; every other input takes a given `.npy`
file or number (`--input sr=16000`) or seeded random data (uniform [0, 1) floats, integers 0..9),
identical from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.backends.base import TensorInfo, check_feeds
from agent.bundle import Preprocessing
from agent.errors import InputSpecError, UsageError


def resolve_shapes(inputs: Sequence[TensorInfo], batch: int,
                   overrides: Dict[str, Sequence[int]]) -> List[Tuple[int, ...]]:
    """The concrete shape of every input, or `InputSpecError` naming what is unresolved or wrong."""
    unknown = set(overrides) - {t.name for t in inputs}
    if unknown:
        raise InputSpecError(f"--shape names no input of this model: {', '.join(sorted(unknown))} "
                             f"(its inputs: {', '.join(t.name for t in inputs)})")
    shapes = []
    for info in inputs:
        if info.name in overrides:
            shape = tuple(int(d) for d in overrides[info.name])
            _check_override(info, shape)
        else:
            shape = tuple(_resolve_dim(info, axis, dim, batch) for axis, dim in enumerate(info.shape))
        shapes.append(shape)
    return shapes


def _check_override(info: TensorInfo, shape: Tuple[int, ...]) -> None:
    if len(shape) != len(info.shape):
        raise InputSpecError(f"--shape {info.name}: {len(shape)} dimensions given, the model's input has "
                             f"{len(info.shape)} ({list(info.shape)})")
    for axis, (want, got) in enumerate(zip(info.shape, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise InputSpecError(f"--shape {info.name}: dimension {axis} is fixed to {want} by the model, "
                                 f"{got} was given")


def _resolve_dim(info: TensorInfo, axis: int, dim: object, batch: int) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    if axis == 0:
        return batch
    name = f"{dim!r}" if isinstance(dim, str) else "dynamic"
    raise InputSpecError(f"input {info.name!r} dimension {axis} ({name}) is not fixed by the model: give it with "
                         f"--shape {info.name}=" + ",".join(str(d) if isinstance(d, int) and d > 0 else "N"
                                                             for d in info.shape))


def generate(info: TensorInfo, shape: Tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded random data for one input: the same array for the same input, shape and seed."""
    rng = np.random.default_rng([seed, len(info.name)] + list(info.name.encode()))
    dtype = np.dtype(info.dtype)
    if info.quantization or np.issubdtype(dtype, np.floating):
        return rng.random(shape, dtype=np.float32)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, size=shape).astype(dtype)


def load_npy(name: str, path: str) -> np.ndarray:
    """An array given with `--input NAME=FILE.npy`, never unpickled."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--input {name}: cannot read {path}: {exc}") from exc


@dataclass
class Feeder:
    """Builds input batches for a session: bundle samples for input 0, given or generated data elsewhere."""

    inputs: List[TensorInfo]
    files: Dict[str, str]
    seed: int = 0
    samples: Optional[np.ndarray] = None
    preprocessing: Optional[Preprocessing] = None
    layout: str = "ANY"

    def __post_init__(self) -> None:
        unknown = set(self.files) - {t.name for t in self.inputs}
        if unknown:
            raise InputSpecError(f"--input names no input of this model: {', '.join(sorted(unknown))} "
                                 f"(its inputs: {', '.join(t.name for t in self.inputs)})")
        by_name = {info.name: info for info in self.inputs}
        self._given = {name: given_array(by_name[name], text) for name, text in self.files.items()}

    def shapes(self, batch: int, overrides: Dict[str, Sequence[int]]) -> List[Tuple[int, ...]]:
        """Input shapes, where a given `--input` array fixes its own input's shape."""
        merged = dict(overrides)
        merged.update({name: array.shape for name, array in self._given.items()})
        return resolve_shapes(self.inputs, batch, merged)

    def uses_samples(self, shapes: Sequence[Tuple[int, ...]]) -> bool:
        """Whether the bundle's samples fit the first input (and are not overridden by `--input`)."""
        return (self.samples is not None and bool(self.inputs) and self.inputs[0].name not in self._given
                and tuple(self.samples.shape[1:]) == tuple(shapes[0][1:]))

    def batch(self, shapes: Sequence[Tuple[int, ...]], rows: Optional[np.ndarray] = None,
              seed_offset: int = 0) -> List[np.ndarray]:
        """One set of feeds: `rows` (raw samples) or the first samples for input 0 where they fit, given
        arrays, and data generated with `seed + seed_offset` for the rest."""
        feeds = []
        for index, (info, shape) in enumerate(zip(self.inputs, shapes)):
            if info.name in self._given:
                feeds.append(self._given[info.name])
            elif index == 0 and self.uses_samples(shapes):
                assert self.samples is not None  # uses_samples() said so
                raw = rows if rows is not None else _cycle(self.samples, shape[0])
                feeds.append(self._prepare(raw))
            else:
                feeds.append(generate(info, shape, self.seed + seed_offset))
        check_feeds(feeds, self.inputs)
        return feeds

    def _prepare(self, raw: np.ndarray) -> np.ndarray:
        if self.preprocessing is None:
            return raw
        return self.preprocessing.apply(raw, self.layout)

    def sample_batches(self, shapes: Sequence[Tuple[int, ...]]) -> Iterator[Tuple[int, List[np.ndarray]]]:
        """The bundle's samples in batches of the input's batch size: (valid rows, feeds); the last batch
        is padded by repeating its final sample, and only its valid rows count."""
        assert self.samples is not None
        size = shapes[0][0]
        for start in range(0, len(self.samples), size):
            rows = self.samples[start:start + size]
            valid = len(rows)
            if valid < size:
                rows = np.concatenate([rows, np.repeat(rows[-1:], size - valid, axis=0)])
            yield valid, self.batch(shapes, rows)

    def generated_batches(self, shapes: Sequence[Tuple[int, ...]],
                          count: int) -> Iterator[Tuple[int, List[np.ndarray]]]:
        """`count` batches of seeded data (different seeds, the same on every run), for fidelity checks
        of models without evaluation samples."""
        for offset in range(count):
            yield shapes[0][0], self.batch(shapes, seed_offset=1 + offset)


def _cycle(samples: np.ndarray, count: int) -> np.ndarray:
    return samples[np.arange(count) % len(samples)]


def parse_shape_arg(text: str) -> Tuple[str, List[int]]:
    """Parse `NAME=D1,D2,...` from `--shape`."""
    name, sep, dims = text.rpartition("=")
    try:
        values = [int(d) for d in dims.split(",")]
    except ValueError:
        values = []
    if not sep or not name or not values or any(v <= 0 for v in values):
        raise UsageError(f"--shape takes NAME=D1,D2,... with positive integers, not {text!r}")
    return name, values


def input_value(text: str) -> Optional[Union[int, float]]:
    """The number an `--input NAME=VALUE` gives (`16000`, `0.5`, `true`), or None for a file path."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return int(lowered == "true")
    for kind in (int, float):
        try:
            return kind(lowered)
        except ValueError:
            continue
    return None


def given_array(info: TensorInfo, text: str) -> np.ndarray:
    """The array an `--input` gives one input: a `.npy` file, or a number filling the input's shape
    (its unknown dims taken as 1) at the input's dtype."""
    value = input_value(text)
    if value is None:
        return load_npy(info.name, text)
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
    return np.full(shape, value, dtype=np.dtype(info.dtype))


def parse_input_arg(text: str) -> Tuple[str, str]:
    """Parse `NAME=FILE.npy` or `NAME=VALUE` (a number, e.g. `sr=16000`) from `--input`, checking that a
    file exists."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"--input takes NAME=FILE.npy or NAME=VALUE, not {text!r}")
    if input_value(path) is None and not Path(path).is_file():
        raise UsageError(f"--input {name}: file not found: {path}")
    return name, path
