"""A `profile` job's profile sections, computed in a child process: reading a model's graph imports
`onnx` (here about 22 MB and 1.4 s for a small model) or the TFLite schema, which must neither bloat
nor block a long-running caller (the daemon). `python -m agent.jobs.sections LIMIT_MB` reads the
`SectionRequest`s as JSON on stdin and prints their sections as one JSON line; the caller waits under
the job's time limit, memory limit (RLIMIT_AS, set by the child before it reads anything) and cancel poll.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent import child_env
from agent.errors import AgentError, WorkerError
from agent.measure.isolate import WorkerCancelled
from agent.measure.plan import MeasureRequest

POLL_S = 0.1  # how often the cancel flag is read while the child runs


@dataclasses.dataclass
class SectionRequest:
    """One report's profile section to compute: the model file that ran, and what was measured on it."""

    path: str
    shapes: Dict[str, List[int]]  # the inputs' resolved shapes; empty: `given` matched onto the file's inputs
    given: Dict[str, List[int]]  # the request's --shape values
    bundle_inputs: List[str]  # the manifest's input names, which may differ from the file's (matched by position)
    threads: int
    trace: Optional[Dict[str, Any]] = None
    latency: Optional[Dict[str, Any]] = None
    peaks: Optional[Dict[str, Any]] = None
    scaling: Optional[Dict[str, Any]] = None


def profile_sections(requests: Sequence[SectionRequest], limits: MeasureRequest) -> List[Dict[str, Any]]:
    """Each request's profile section (or `{"error": ...}`), from a child process run under `limits`'s
    time limit, memory limit and cancel poll (`WorkerCancelled` when that says stop)."""
    command = [sys.executable, "-m", "agent.jobs.sections", str(limits.memory_limit_mb or 0)]
    with tempfile.TemporaryFile("w+b") as given, tempfile.TemporaryFile("w+b") as output, \
            tempfile.TemporaryFile("w+b") as log:
        given.write(json.dumps([dataclasses.asdict(r) for r in requests]).encode())
        given.seek(0)
        child = subprocess.Popen(command, stdin=given, stdout=output, stderr=log, start_new_session=True,
                                 env=child_env())
        try:
            _wait(child, time.monotonic() + limits.time_limit_s, limits)
        finally:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        output.seek(0)
        log.seek(0)
        text, errors = output.read().decode("utf-8", "replace"), log.read().decode("utf-8", "replace")
    try:
        if child.returncode != 0:
            raise ValueError(f"exit code {child.returncode}")
        return list(json.loads(text.strip().splitlines()[-1]))
    except (ValueError, IndexError) as error:
        raise WorkerError(f"the profile sections could not be computed ({error}): {errors.strip()[-500:]}") from None


def _wait(child: subprocess.Popen, deadline: float, limits: MeasureRequest) -> None:
    while True:
        try:
            child.wait(POLL_S)
            return
        except subprocess.TimeoutExpired:
            pass
        if limits.should_cancel is not None and limits.should_cancel():
            raise WorkerCancelled("cancelled")
        if time.monotonic() > deadline:
            raise WorkerError(f"computing the profile sections ran past {limits.time_limit_s:g} s and was stopped")


def section(request: SectionRequest) -> Dict[str, Any]:
    """The profile section of one report, or `{"error": ...}` naming why its file could not be profiled."""
    from agent.device.peaks import Peaks
    from agent.profile.measured import profile_section
    from agent.profile.static import static_profile

    shapes = request.shapes or file_shapes(request.path, request.given, request.bundle_inputs)
    try:
        profile = static_profile(request.path, shapes)
    except AgentError as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    peaks = Peaks.from_dict(request.peaks) if request.peaks else None
    return profile_section(profile, request.trace, request.latency, peaks, request.threads, request.scaling)


def file_shapes(path: str, shapes: Mapping[str, Sequence[int]], bundle_inputs: Sequence[str]) -> Dict[str, List[int]]:
    """`--shape` values keyed by the file's own input names: a bundle's manifest may name its inputs
    differently from the file; such names are matched by position, as the worker does."""
    if not shapes:
        return {}
    from agent.graph.read import read_graph

    try:
        own = read_graph(path).inputs
    except AgentError:
        return {name: list(dims) for name, dims in shapes.items()}  # the profile will name the problem
    aliases = dict(zip(bundle_inputs, own))
    return {aliases.get(name, name): list(dims) for name, dims in shapes.items()}


def main(memory_limit_mb: int) -> None:
    """The child: limit its address space, read the requests on stdin, print their sections."""
    if memory_limit_mb:
        size = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    requests = [SectionRequest(**entry) for entry in json.load(sys.stdin)]
    print(json.dumps([section(request) for request in requests]))


if __name__ == "__main__":
    main(int(sys.argv[1]))
