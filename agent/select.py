"""`edge-agent select`: the fastest configuration that keeps accuracy, found by measuring on the board.

Candidates are every available backend x precision (the bundle's files and what backends make on the
device: ONNX Runtime INT8/FP16, TensorRT FP16/INT8) x thread count x variant (ONNX Runtime's
TensorRT/CUDA providers, a DLA core). They are raced in race.py; the decision (decision.py) is stored
per (device fingerprint, model files' sha256, runtime versions) and reused until one of them changes.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from agent import jobs
from agent.backends.registry import BACKENDS, get_backend
from agent.bundle import Bundle, open_model
from agent.decision import Candidate, Decision, decision_key, decision_path, load_decision, store_decision
from agent.errors import BackendUnavailableError
from agent.race import Race, SelectRequest, StartHandler, objective_value

__all__ = ["SelectRequest", "apply_choice", "candidates", "select", "stored_or_select", "thread_counts"]


def thread_counts(cores: int) -> List[int]:
    """1, 2, 4, ... up to the core count, and the core count itself."""
    counts = [1 << i for i in range(cores.bit_length()) if 1 << i <= cores]
    return sorted(set(counts + [cores]))


def runtime_versions() -> Dict[str, Optional[str]]:
    """Each backend that can run here, with its version: a decision is re-made when one changes."""
    return {name: status.version for name, status in ((n, b.status()) for n, b in BACKENDS.items())
            if status.available}


def candidates(bundle: Bundle, request: SelectRequest) -> List[Tuple[Optional[jobs.Configuration], Candidate]]:
    """Every configuration to race (with its Candidate), then those skipped before measuring (with None)."""
    names = request.backends or list(BACKENDS)
    usable = []
    for backend in (get_backend(name) for name in names):
        status = backend.status()
        if status.available:
            usable.append(backend)
        elif request.backends:
            raise BackendUnavailableError(f"backend {backend.name} is unavailable: {status.reason}")
    plan_request = jobs.MeasureRequest(model=request.model, backends=[b.name for b in usable] or None, derive=True)
    threads = request.threads or thread_counts(jobs.default_threads())
    found: List[Tuple[Optional[jobs.Configuration], Candidate]] = []
    for config in jobs.plan(bundle, plan_request):
        for count, options in config.backend.variants(config.precision, threads):
            found.append((config, Candidate(config.backend.name, config.precision, count, options, config.model.key,
                                            bool(config.derived))))
    for config, reason in jobs.derivations(bundle, usable):
        if reason is not None:
            found.append((None, Candidate(config.backend.name, config.precision, None, {}, config.model.key, True,
                                          status="rejected", reason=reason)))
    return found


def _reference_first(pairs: List[Tuple[jobs.Configuration, Candidate]]) -> List[Tuple[jobs.Configuration, Candidate]]:
    """The FP32 reference (the ONNX FP32 file on ONNX Runtime's CPU provider, else any FP32 file, most
    threads) first: its outputs judge everyone else's."""
    def rank(pair: Tuple[jobs.Configuration, Candidate]) -> Tuple[int, int, int, int]:
        config, candidate = pair
        return (candidate.precision != "fp32" or candidate.derived, config.model.format != "onnx",
                candidate.options.get("provider", "CPUExecutionProvider") != "CPUExecutionProvider",
                -(candidate.threads or 0))
    return sorted(pairs, key=rank)


def select(request: SelectRequest, device: Dict[str, Any], on_start: Optional[StartHandler] = None,
           on_progress: Optional[Any] = None) -> Decision:
    """Choose the fastest admissible configuration of `request.model` on this board, or reuse the stored
    decision made with the same settings for the same device, model files and runtime versions."""
    started = time.monotonic()
    objective_value(Candidate("-", "fp32", 1), request.objective)  # an unavailable objective fails first
    bundle = open_model(request.model)
    key = decision_key(device["fingerprint"], {m.key: m.sha256 for m in bundle.models}, runtime_versions())
    path = decision_path(bundle.name, key)
    stored = None if request.refresh else load_decision(path, key)
    if stored is not None and stored.settings == request.settings():
        return stored
    pairs = candidates(bundle, request)
    raced = _reference_first([(c, k) for c, k in pairs if c is not None])
    with tempfile.TemporaryDirectory(prefix="edge-agent-select-") as workdir:
        race = Race(bundle, request, device, Path(workdir), on_start, on_progress)
        by_id = {id(candidate): config for config, candidate in raced}
        admissible = race.screen(raced)
        chosen = race.final(race.halve(admissible, by_id), by_id) if admissible else None
    notes = race.notes + ([] if chosen else ["no candidate was admissible: see each one's reason"])
    decision = Decision(key, request.settings(), [c for _, c in raced] + [c for conf, c in pairs if conf is None],
                        race.reference, time.monotonic() - started, notes)
    store_decision(path, decision)
    return decision


def stored_or_select(model: str, progress: Optional[Any] = None) -> Decision:
    """The stored decision for `model` on this device and runtimes (whatever settings made it), or a new
    one with the default settings: what `bench`/`eval --backend auto` run."""
    device = jobs.device_section()
    bundle = open_model(model)
    key = decision_key(device["fingerprint"], {m.key: m.sha256 for m in bundle.models}, runtime_versions())
    stored = load_decision(decision_path(bundle.name, key), key)
    if stored is not None:
        return stored
    return select(SelectRequest(model), device, progress.start if progress else None,
                  progress.update if progress else None)


def apply_choice(request: jobs.MeasureRequest, decision: Decision) -> jobs.MeasureRequest:
    """`request` narrowed to the chosen configuration (its backend, precision, threads and options)."""
    choice = decision.choice
    if choice is None:
        raise BackendUnavailableError(f"--backend auto: select found no admissible configuration for "
                                      f"{request.model} (run `edge-agent select {request.model}` to see why)")
    return dataclasses.replace(request, backends=[choice.backend], precisions=[choice.precision],
                               threads=choice.threads, options=dict(choice.options, **request.options),
                               derive=choice.derived)
