"""The `select` job: the fastest configuration that keeps accuracy, found by measuring on the board.

The candidates (agent.selection.candidates) are raced (agent.selection.race); the decision
(agent.selection.decision) is stored per (device fingerprint, model files' sha256, runtime versions)
and reused until one of them changes. `bench`/`eval --backend auto` run the stored choice.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from agent.bundle import open_model
from agent.device.detect import DeviceSection, device_section
from agent.errors import BackendUnavailableError
from agent.measure.plan import MeasureRequest
from agent.selection.candidates import candidates, reference_first, runtime_versions
from agent.selection.decision import Candidate, Decision, decision_key, decision_path, load_decision, store_decision
from agent.selection.race import Race, StartHandler, objective_value
from agent.selection.request import SelectRequest


def select(request: SelectRequest, device: DeviceSection, on_start: Optional[StartHandler] = None,
           on_progress: Optional[Any] = None) -> Decision:
    """Choose the fastest admissible configuration of `request.model` on this board, or reuse the stored
    decision made with the same settings for the same device, model files and runtime versions."""
    started = time.monotonic()
    objective_value(Candidate("-", "fp32", 1), request.objective)  # an unavailable objective fails first
    bundle = open_model(request.model)
    key = decision_key(device.fingerprint, {m.key: m.sha256 for m in bundle.models}, runtime_versions())
    path = decision_path(bundle.name, key)
    stored = None if request.refresh else load_decision(path, key)
    if stored is not None and stored.settings == request.settings():
        return stored
    pairs = candidates(bundle, request)
    raced = reference_first([(c, k) for c, k in pairs if c is not None])
    with tempfile.TemporaryDirectory(prefix="edge-agent-select-") as workdir:
        race = Race(bundle, request, device, Path(workdir), on_start, on_progress)
        by_id = {id(candidate): config for config, candidate in raced}
        admissible = race.screen(raced)
        chosen = race.final(race.halve(admissible, by_id), by_id) if admissible else None
    notes = race.notes + ([] if chosen else ["no candidate was admissible: see each one's reason"])
    if chosen is not None and chosen.stability == "unstable":
        notes.append("the choice's last run was unstable (docs/report.md, Stability): the race may have been "
                     "decided by noise; run `edge-agent select --refresh` on a quiet board")
    decision = Decision(key, request.settings(), [c for _, c in raced] + [c for conf, c in pairs if conf is None],
                        race.reference, time.monotonic() - started, notes)
    store_decision(path, decision)
    return decision


def stored_or_select(model: str, progress: Optional[Any] = None, limits: Optional[MeasureRequest] = None) -> Decision:
    """The stored decision for `model` on this device and runtimes (whatever settings made it), or a new
    one with the default settings: what `bench`/`eval --backend auto` run (under the memory limit and
    cancel poll of `limits`, the measurement asking for it)."""
    device = device_section()
    bundle = open_model(model)
    key = decision_key(device.fingerprint, {m.key: m.sha256 for m in bundle.models}, runtime_versions())
    stored = load_decision(decision_path(bundle.name, key), key)
    if stored is not None:
        return stored
    request = SelectRequest(model, memory_limit_mb=limits.memory_limit_mb if limits else None,
                            should_cancel=limits.should_cancel if limits else None)
    return select(request, device, progress.start if progress else None,
                  progress.update if progress else None)


def apply_choice(request: MeasureRequest, decision: Decision) -> MeasureRequest:
    """`request` narrowed to the chosen configuration (its backend, precision, threads and options)."""
    choice = decision.choice
    if choice is None:
        raise BackendUnavailableError(f"--backend auto: select found no admissible configuration for "
                                      f"{request.model} (run `edge-agent select {request.model}` to see why)")
    return dataclasses.replace(request, backends=[choice.backend], precisions=[choice.precision],
                               threads=choice.threads, options=dict(choice.options, **request.options),
                               derive=choice.derived)
