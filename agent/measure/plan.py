"""What to measure, and the configurations that will run it: a request, and the (model file, backend) pairs
this board and the request allow, including the precisions backends make on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from agent.backends.base import Backend
from agent.backends.registry import BACKENDS, get_backend
from agent.bundle import Bundle, ModelFile
from agent.device.cpu import physical_cores, usable_cpus
from agent.errors import BackendUnavailableError, UsageError
from agent.measure.latency import Warmup
from agent.measure.messages import TraceSettings


@dataclass
class MeasureRequest:
    """What to measure and how: the `bench`/`eval` command line, as data."""

    model: str
    kind: str = "bench"
    backends: Optional[List[str]] = None
    precisions: Optional[List[str]] = None
    threads: Optional[int] = None
    options: Dict[str, str] = field(default_factory=dict)
    warmup: Warmup = Warmup()
    iterations: int = 100
    min_seconds: float = 1.0
    rounds: int = 3
    # Send every timed call back (`--export-times`); the reports then carry them in `run_times`.
    keep_times: bool = False
    batch: List[int] = field(default_factory=lambda: [1])
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    inputs: Dict[str, str] = field(default_factory=dict)
    eval_limit: Optional[int] = None
    time_limit_s: float = 300.0
    seed: int = 0
    # Also record the runtime's per-op trace (`edge-agent profile`).
    trace: Optional[TraceSettings] = None
    # Also run the precisions backends make on the device (ONNX Runtime INT8/FP16, TensorRT FP16/INT8
    # engines) from the bundle's FP32 file, where the bundle does not ship that precision itself.
    derive: bool = False
    # Run more threads than this process has cores (refused otherwise: it measures contention, not the model).
    allow_oversubscribe: bool = False
    # The daemon's: each worker's address-space limit (RLIMIT_AS), and a poll that stops the running worker
    # when it returns True (`cancel`).
    memory_limit_mb: Optional[int] = None
    should_cancel: Optional[Callable[[], bool]] = field(default=None, repr=False, compare=False)

    @property
    def measures_latency(self) -> bool:
        return self.kind in ("bench", "profile")


@dataclass
class Configuration:
    """One model file with one backend; `derived` names a precision the backend makes from the file."""

    model: ModelFile
    backend: Backend
    derived: Optional[str] = None

    @property
    def precision(self) -> str:
        """The precision that runs: the derived one, else the file's."""
        return self.derived or self.model.precision

    @property
    def label(self) -> str:
        return f"{self.backend.name}/{self.precision}"


StartHandler = Callable[[int, int, str], None]


def default_threads() -> int:
    """The physical cores this process may run on (SMT siblings once): the documented default thread count.
    A second hardware thread on a busy core adds contention, not speed, for these kernels; `select` sweeps
    thread counts and `--backend auto` runs the measured best."""
    return physical_cores(usable_cpus())


def check_threads(request: MeasureRequest, counts: List[int]) -> None:
    """Refuse thread counts above the CPUs this process may run on (its runtimes' threads would contend
    for them: that measures the contention, not the model), unless the request allows it."""
    cores = len(usable_cpus())
    over = [count for count in counts if count > cores]
    if over and not request.allow_oversubscribe:
        raise UsageError(f"{max(over)} threads is more than the {cores} CPUs this process may run on: the "
                         "runtimes' threads would contend for them (--allow-oversubscribe to run anyway)")


def plan(bundle: Bundle, request: MeasureRequest) -> List[Configuration]:
    """Every (model file, backend) pair the request and this board allow, or an error saying why none."""
    check_threads(request, [request.threads] if request.threads else [])
    names = request.backends or list(BACKENDS)
    backends = [get_backend(name) for name in names]
    statuses = {b.name: b.status() for b in backends}
    if request.backends:
        for backend in backends:
            if not statuses[backend.name].available:
                raise BackendUnavailableError(f"backend {backend.name} is unavailable: "
                                              f"{statuses[backend.name].reason}")
    models = [m for m in bundle.models if not request.precisions or m.precision in request.precisions]
    usable = [b for b in backends if statuses[b.name].available]
    found = derivations(bundle, usable, request.precisions) if request.derive else []
    derived = [c for c, reason in found if reason is None]
    if not models and not derived:
        offered = ", ".join(sorted({m.precision for m in bundle.models}))
        why = sorted({reason for _, reason in found if reason}) or \
            ([] if request.derive else ["--derive makes more on the device"])
        raise UsageError(f"{bundle.name} has no model in precision {', '.join(request.precisions or [])} "
                         f"(it offers {offered}{''.join('; ' + w for w in why)})")
    configs = [Configuration(m, b) for m in models for b in usable if m.format in b.formats] + derived
    if not configs:
        formats = ", ".join(sorted({m.format for m in models}))
        reasons = "; ".join([f"{b.name}: {statuses[b.name].reason or 'does not read ' + formats}" for b in backends]
                            + sorted({f"{c.label}: {reason}" for c, reason in found if reason}))
        raise BackendUnavailableError(f"no backend here can run {bundle.name} ({formats}): {reasons}")
    return configs


def derivations(bundle: Bundle, backends: List[Backend],
                precisions: Optional[List[str]] = None) -> List[Tuple[Configuration, Optional[str]]]:
    """Every precision a backend here could make from a bundle file, with the reason it is skipped (None:
    it can be made). The bundle's own files win: nothing is derived that the bundle ships."""
    shipped = {(m.format, m.precision) for m in bundle.models}
    found: List[Tuple[Configuration, Optional[str]]] = []
    for model in bundle.models:
        for backend in backends:
            for precision in backend.derived_precisions(model) if model.format in backend.formats else ():
                if (model.format, precision) in shipped or (precisions and precision not in precisions):
                    continue
                reason = None
                if precision == "int8" and bundle.calibration is None:
                    reason = ("INT8 skipped: " + ("a plain model file has no calibration data" if bundle.is_plain_file
                              else "the bundle has no calibration data (data.calibration in manifest.json)"))
                found.append((Configuration(model, backend, precision), reason))
    return found
