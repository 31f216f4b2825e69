"""What crosses the pipe between the measuring process and its worker: one `WorkerRequest` in, one
`WorkerResult` back, each serialised to JSON in exactly one place (its `to_dict` / `from_dict`).

The request says what to load and how to feed, time, trace and save it; the result carries what the
report is made of. Progress events are not here: the worker sends them as they are, for the caller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from agent.backends.build import CalibrationSet
from agent.bundle import Preprocessing
from agent.measure.latency import LoopPlan, Warmup


@dataclass(frozen=True)
class ModelRef:
    """The model file to load and its format."""

    path: str
    format: str


@dataclass(frozen=True)
class SampleRef:
    """The bundle's evaluation split (`.npz`, `x` raw samples), at most `limit` samples of it."""

    path: str
    limit: Optional[int] = None


@dataclass(frozen=True)
class FeedSpec:
    """How to feed the model: batch sizes, fixed shapes, given `.npy` files, the generator's seed, the
    bundle's input names, its samples with their layout and preprocessing."""

    batch: List[int] = field(default_factory=lambda: [1])
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)
    seed: int = 0
    names: List[str] = field(default_factory=list)
    data: Optional[SampleRef] = None
    layout: str = "ANY"
    preprocessing: Optional[Preprocessing] = None


@dataclass(frozen=True)
class OutputSpec:
    """The output pass: where to save the first output's rows, and how many seeded batches to run when
    there are no evaluation samples."""

    save: str
    generated_batches: int


@dataclass(frozen=True)
class TraceSettings:
    """The runtime's per-op trace (`edge-agent profile`): `runs` traced runs after `warmup` untraced ones."""

    runs: int = 100
    warmup: int = 10


@dataclass(frozen=True)
class WorkerRequest:
    """One configuration to measure: the model, the backend with its threads and options, the precision
    to derive (None: the file's own), and the parts to run (latency, output pass, trace; None: skipped)."""

    model: ModelRef
    backend: str
    threads: int
    options: Dict[str, Any]
    feed: FeedSpec = FeedSpec()
    precision: Optional[str] = None
    calibration: Optional[CalibrationSet] = None
    latency: Optional[LoopPlan] = None
    outputs: Optional[OutputSpec] = None
    trace: Optional[TraceSettings] = None
    memory_limit_mb: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as the worker reads it on stdin."""
        feed = self.feed
        return {
            "model": asdict(self.model), "backend": self.backend, "threads": self.threads, "options": self.options,
            "feed": {"batch": feed.batch, "shapes": feed.shapes, "files": feed.files, "seed": feed.seed,
                     "names": feed.names, "data": _optional_dict(feed.data), "layout": feed.layout,
                     "preprocessing": None if feed.preprocessing is None else feed.preprocessing.to_dict()},
            "precision": self.precision,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "latency": _optional_dict(self.latency), "outputs": _optional_dict(self.outputs),
            "trace": _optional_dict(self.trace), "memory_limit_mb": self.memory_limit_mb,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> WorkerRequest:
        """The inverse of `to_dict`."""
        feed, plan = data["feed"], data["latency"]
        return cls(
            model=ModelRef(**data["model"]), backend=data["backend"], threads=data["threads"],
            options=data["options"],
            feed=FeedSpec(feed["batch"], feed["shapes"], feed["files"], feed["seed"], feed["names"],
                          _part(SampleRef, feed["data"]), feed["layout"],
                          Preprocessing.from_dict(feed["preprocessing"])),
            precision=data["precision"], calibration=CalibrationSet.from_dict(data["calibration"]),
            latency=None if plan is None else LoopPlan(**dict(plan, warmup=Warmup(**plan["warmup"]))),
            outputs=_part(OutputSpec, data["outputs"]), trace=_part(TraceSettings, data["trace"]),
            memory_limit_mb=data["memory_limit_mb"])


@dataclass(frozen=True)
class BackendRun:
    """The report's backend section: the runtime that ran, its version, and exactly how it was set up."""

    name: str
    version: Optional[str]
    configuration: Dict[str, Any]


@dataclass(frozen=True)
class MemoryUse:
    """The worker's resident memory before and after the load (None without /proc), and its peak."""

    baseline_rss_mb: Optional[float]
    rss_after_load_mb: Optional[float]
    model_added_mb: Optional[float]
    peak_rss_mb: float


@dataclass(frozen=True)
class RunTimes:
    """Every timed call of one batch size (`--export-times`): its round, its start in ms from the first timed
    call's start, and its latency in ms."""

    batch: int
    round: List[int]
    start_ms: List[float]
    latency_ms: List[float]


@dataclass(frozen=True)
class Timing:
    """The first (cold) call, the first batch size's latency summary, every batch size's when there were
    several (None for one), and every timed call when the plan kept them (None otherwise)."""

    first_ms: float
    latency: Dict[str, Any]
    by_batch: Optional[List[Dict[str, Any]]] = None
    runs: Optional[List[RunTimes]] = None

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Timing:
        """The inverse of `asdict`."""
        runs = data["runs"]
        return cls(data["first_ms"], data["latency"], data["by_batch"],
                   None if runs is None else [RunTimes(**r) for r in runs])


@dataclass(frozen=True)
class OutputPass:
    """Where the first output's rows were saved, and whether they came from the evaluation split."""

    file: str
    from_evaluation: bool


@dataclass(frozen=True)
class WorkerResult:
    """What one worker measured: the backend run, the precision that ran, the resolved inputs, the load
    time, memory and thermal sections, the build's warnings, and the parts that were asked for."""

    backend: BackendRun
    precision: str
    inputs: List[Dict[str, Any]]
    load_ms: float
    memory: MemoryUse
    thermal: Dict[str, Any]
    build_warnings: List[str] = field(default_factory=list)
    timing: Optional[Timing] = None
    trace: Optional[Dict[str, Any]] = None
    output_pass: Optional[OutputPass] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON form, as the worker writes it (its parts hold JSON values only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> WorkerResult:
        """The inverse of `to_dict`."""
        return cls(
            backend=BackendRun(**data["backend"]), precision=data["precision"], inputs=data["inputs"],
            load_ms=data["load_ms"], memory=MemoryUse(**data["memory"]), thermal=data["thermal"],
            build_warnings=data["build_warnings"],
            timing=None if data["timing"] is None else Timing.from_dict(data["timing"]), trace=data["trace"],
            output_pass=_part(OutputPass, data["output_pass"]))


def _optional_dict(part: Any) -> Optional[Dict[str, Any]]:
    return None if part is None else asdict(part)


def _part(kind: Any, data: Optional[Dict[str, Any]]) -> Any:
    """A flat part back from its `asdict` form (None stays None)."""
    return None if data is None else kind(**data)
