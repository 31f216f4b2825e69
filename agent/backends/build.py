"""What a backend makes on the device before it loads a model, and the data it makes it from.

ONNX Runtime quantizes an FP32 ONNX file to INT8 (and converts it to FP16 where a GPU provider can
use that); TensorRT builds an engine. Both happen in the worker process before the model is loaded,
never inside the timed loop, and both are cached under the cache folder (`agent.cache.cache_folder`). A
`BuildSpec` says what to make; `Prepared` says what was made, for the report.

Calibration data is the bundle's calibration split, preprocessed exactly as evaluation samples are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from agent.bundle import Bundle, Preprocessing

# Below this many calibration samples, INT8 ranges are a guess: the build goes on, with a warning.
MIN_CALIBRATION_SAMPLES = 100


@dataclass(frozen=True)
class CalibrationSet:
    """The bundle's calibration split with its preprocessing: float batches in the model's layout."""

    path: Path
    sha256: str
    samples: int
    layout: str = "ANY"
    preprocessing: Optional[Preprocessing] = None

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Optional[CalibrationSet]:
        """The bundle's calibration data, or None when it has none (INT8 is then skipped)."""
        if bundle.calibration is None:
            return None
        layout = bundle.inputs[0].layout if bundle.inputs else "ANY"
        return cls(bundle.calibration.path, bundle.calibration.sha256, bundle.calibration.samples, layout,
                   bundle.preprocessing)

    def load(self) -> np.ndarray:
        """Every sample, preprocessed to float32: shape `[N, *input_shape[1:]]`."""
        with np.load(str(self.path), allow_pickle=False) as data:
            raw = data["x"]
        return self.preprocessing.apply(raw, self.layout) if self.preprocessing else raw.astype(np.float32)

    def warning(self, used: int) -> Optional[str]:
        """The too-small warning for `used` samples, or None when there are enough."""
        if used >= MIN_CALIBRATION_SAMPLES:
            return None
        return (f"the calibration set has only {used} samples (fewer than {MIN_CALIBRATION_SAMPLES}): "
                "INT8 ranges may not represent real inputs")

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as the worker request carries it."""
        return {"path": str(self.path), "sha256": self.sha256, "samples": self.samples, "layout": self.layout,
                "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict()}

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> Optional[CalibrationSet]:
        """The inverse of `to_dict` (None stays None)."""
        if not data:
            return None
        return cls(Path(data["path"]), data["sha256"], int(data["samples"]), data.get("layout", "ANY"),
                   Preprocessing.from_dict(data.get("preprocessing")))


def batch_ranges(samples: int, batch: int) -> List[Tuple[int, int]]:
    """`[start, end)` of every full batch of `batch` samples; the remainder is left out (a calibrator's
    batch shape is fixed), unless there are fewer samples than one batch: then one batch of them all."""
    if samples <= 0:
        return []
    if samples < batch:
        return [(0, samples)]
    return [(start, start + batch) for start in range(0, samples - batch + 1, batch)]


@dataclass(frozen=True)
class BuildSpec:
    """What to make before loading: a precision to derive (None: run the file as it is), the calibration
    data for INT8, and the batch sizes and fixed shapes the runs will use (for static-shape engines)."""

    precision: Optional[str] = None
    calibration: Optional[CalibrationSet] = None
    batches: Tuple[int, ...] = (1,)
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    names: Tuple[str, ...] = ()


@dataclass
class Prepared:
    """What a backend made: the file `load` opens, and how it was made (the report's `build` section)."""

    path: Path
    precision: str
    details: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
