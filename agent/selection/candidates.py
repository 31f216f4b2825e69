"""What `select` races: every available backend x precision (the bundle's files and what backends make on
the device) x thread count x variant (ONNX Runtime's TensorRT/CUDA providers, a DLA core), the FP32
reference first, and those skipped before measuring with the reason.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from agent.backends.registry import BACKENDS, get_backend
from agent.bundle import Bundle
from agent.device.cpu import usable_cpus
from agent.errors import BackendUnavailableError
from agent.measure.plan import Configuration, MeasureRequest, default_threads, derivations, plan
from agent.selection.decision import Candidate
from agent.selection.request import SelectRequest


def thread_counts(cores: int) -> List[int]:
    """1, 2, 4, ... up to the core count, and the core count itself."""
    counts = [1 << i for i in range(cores.bit_length()) if 1 << i <= cores]
    return sorted(set(counts + [cores]))


def runtime_versions() -> Dict[str, Optional[str]]:
    """Each backend that can run here, with its version: a decision is re-made when one changes."""
    return {name: status.version for name, status in ((n, b.status()) for n, b in BACKENDS.items())
            if status.available}


def candidates(bundle: Bundle, request: SelectRequest) -> List[Tuple[Optional[Configuration], Candidate]]:
    """Every configuration to race (with its Candidate), then those skipped before measuring (with None)."""
    names = request.backends or list(BACKENDS)
    usable = []
    for backend in (get_backend(name) for name in names):
        status = backend.status()
        if status.available:
            usable.append(backend)
        elif request.backends:
            raise BackendUnavailableError(f"backend {backend.name} is unavailable: {status.reason}")
    plan_request = MeasureRequest(model=request.model, backends=[b.name for b in usable] or None, derive=True)
    threads = request.threads or sorted(set(thread_counts(len(usable_cpus())) + [default_threads()]))
    found: List[Tuple[Optional[Configuration], Candidate]] = []
    for config in plan(bundle, plan_request):
        for count, options in config.backend.variants(config.precision, threads):
            found.append((config, Candidate(config.backend.name, config.precision, count, options, config.model.key,
                                            bool(config.derived))))
    for config, reason in derivations(bundle, usable):
        if reason is not None:
            found.append((None, Candidate(config.backend.name, config.precision, None, {}, config.model.key, True,
                                          status="rejected", reason=reason)))
    return found


def reference_first(pairs: List[Tuple[Configuration, Candidate]]) -> List[Tuple[Configuration, Candidate]]:
    """The FP32 reference (the ONNX FP32 file on ONNX Runtime's CPU provider, else any FP32 file, most
    threads) first: its outputs judge everyone else's."""
    def rank(pair: Tuple[Configuration, Candidate]) -> Tuple[int, int, int, int]:
        config, candidate = pair
        return (candidate.precision != "fp32" or candidate.derived, config.model.format != "onnx",
                candidate.options.get("provider", "CPUExecutionProvider") != "CPUExecutionProvider",
                -(candidate.threads or 0))
    return sorted(pairs, key=rank)
