"""What each command does in the daemon: ping, info, models, bench/eval, deploy, profile/select.

A handler takes the validated `Command` and a `JobContext` and returns an `Outcome` (or raises an
`AgentError`, which fails the job with a code). Each calls the job function the CLI calls
(`agent.jobs.measure.run_measure`, `agent.jobs.profile.run_profile`, `agent.jobs.select.select`,
`agent.jobs.info.info`): one worker process per configuration, here with the daemon's memory limit and
the cancel poll, and the job's progress relayed as events. The runtimes' statuses are probed once, in
a child process (agent.backends.probe), so that no runtime is imported into the daemon. Model names
are resolved inside the model store only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from agent import __version__
from agent.backends.registry import gpu_device_node
from agent.device.detect import DeviceSection
from agent.errors import (
    AgentError,
    BackendUnavailableError,
    ModelNotFoundError,
    ProfileError,
    ProtocolError,
    WorkerError,
    error_from,
)
from agent.measure.isolate import WorkerCancelled
from agent.mqtt.protocol import Command
from agent.service.lanes import Handler, JobContext
from agent.service.replies import Outcome, failure

MODEL_EXTENSIONS = (".onnx", ".tflite")
MAX_DEPTH = 4  # a model name has at most four segments (agent.mqtt.schema)
SELECT_GRACE_S = 120.0  # a selection's own time limit covers its race, not loading and judging
PROFILE_LIMITS = 4  # a profile's wall-clock limit, in workers' time limits (configurations, scaling, sections)
_log = logging.getLogger(__name__)


def resolve_model(model_dir: Path, name: str) -> Path:
    """The file or bundle folder `name` names in the store; never a path outside it (symlinks
    included), which fails as `bad_model_name`."""
    root = model_dir.resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ProtocolError("bad_model_name", f"model {name!r} leads outside the model store")
    if not path.exists():
        raise ModelNotFoundError(f"no model {name!r} in the model store {model_dir}")
    return path


def memory_limit_mb(setting: Union[str, int]) -> Optional[int]:
    """The workers' RLIMIT_AS in MB: `auto` is the board's RAM, except on an NVIDIA GPU board (off)."""

    if setting != "auto":
        return int(setting) or None
    if gpu_device_node() is not None:  # CUDA reserves more address space than RLIMIT_AS at RAM size allows
        return None
    return (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) >> 20


def list_models(model_dir: Path) -> List[Dict[str, Any]]:
    """Bundles (folders with manifest.json, read without hashing) and plain model files in the store."""
    found: List[Dict[str, Any]] = []
    if not model_dir.is_dir():
        return found
    for folder, subfolders, files in os.walk(model_dir):
        relative = Path(folder).relative_to(model_dir)
        depth = len(relative.parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < MAX_DEPTH - 1 else []
        if "manifest.json" in files and depth > 0:
            found.append(_bundle_entry(relative.as_posix(), Path(folder) / "manifest.json"))
            subfolders[:] = []
            continue
        for name in sorted(f for f in files if f.endswith(MODEL_EXTENSIONS) and not f.startswith(".")):
            path = Path(folder) / name
            found.append({"name": (relative / name).as_posix(), "format": path.suffix[1:],
                          "bytes": path.stat().st_size})
    return found


def _bundle_entry(name: str, manifest: Path) -> Dict[str, Any]:
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
        models = [{"path": m.get("path"), "format": m.get("format"), "precision": m.get("precision")}
                  for m in document.get("models", [])]
        return {"name": name, "bundle": document.get("name"), "task": document.get("task"), "models": models}
    except (OSError, ValueError, AttributeError) as error:
        return {"name": name, "error": f"unreadable manifest.json: {error}"}


class Handlers:
    """The daemon's command handlers. The runtimes are probed once, in a child process started by
    `prepare` (so that the first job does not wait for it); every job then reads those statuses."""

    def __init__(self) -> None:
        self._probe_lock = threading.Lock()
        self._probed = False
        self._prober = threading.Thread(target=self._background_probe, name="runtime-probe", daemon=True)
        self._device: Optional[DeviceSection] = None
        self._info: Optional[Dict[str, Any]] = None

    def prepare(self) -> None:
        """Start probing the runtimes in the background."""
        self._prober.start()

    def _background_probe(self) -> None:
        try:
            self.runtimes_probed()
        except AgentError as error:  # tried again by the first job that needs it
            _log.warning("%s", error)

    def runtimes_probed(self) -> None:
        """Make sure the backends answer `status()` from the child-process probe (probing now if that failed)."""
        with self._probe_lock:
            if not self._probed:
                from agent.backends.probe import probe_in_child
                from agent.backends.registry import use_statuses

                use_statuses(probe_in_child())
                self._probed = True

    def device(self) -> DeviceSection:
        """The device section of the reports (read once)."""
        from agent.device.detect import device_section

        if self._device is None:
            self._device = device_section()
        return self._device

    def table(self) -> Dict[str, Handler]:
        """Command name -> handler, for the lanes."""
        return {"ping": self.ping, "info": self.info, "models": self.models, "bench": self.measure,
                "eval": self.measure, "deploy": self.deploy, "profile": self.profile, "select": self.select}

    def ping(self, command: Command, context: JobContext) -> Outcome:
        """Alive: the agent's version."""
        return Outcome("done", {"pong": True, "version": __version__})

    def info(self, command: Command, context: JobContext) -> Outcome:
        """`edge-agent info --json`: the board and its runtimes (agent.jobs.info with the probed statuses, once)."""
        from agent.jobs.info import info

        self.runtimes_probed()
        if self._info is None:
            self._info = info()
        return Outcome("done", self._info)

    def models(self, command: Command, context: JobContext) -> Outcome:
        """What the model store holds."""
        store = context.settings.model_dir
        return Outcome("done", {"model_dir": str(store), "models": list_models(store)})

    def deploy(self, command: Command, context: JobContext) -> Outcome:
        """Download, check and install a bundle archive (agent.service.deploy)."""
        from agent.service.deploy import deploy

        return Outcome("done", deploy(command.args, context.settings.model_dir, context.settings.deploy,
                                      context.check_cancelled))

    def measure(self, command: Command, context: JobContext) -> Outcome:
        """bench/eval: every configuration asked for, through agent.jobs.measure.run_measure."""
        from agent.jobs.measure import run_measure

        self.runtimes_probed()
        request = measure_request(command, context, context.cancelled)
        progress = Progress(context)
        if request.backends == ["auto"]:  # as the CLI: the configuration `select` chose (selecting first)
            from agent.jobs.select import apply_choice, stored_or_select

            request = apply_choice(request, stored_or_select(request.model, progress, request))
        reports = run_measure(request, self.device(), progress.start, progress.update)
        return reports_outcome(reports, lambda r: r.status == "ok", lambda: first_failure(reports))

    def profile(self, command: Command, context: JobContext) -> Outcome:
        """profile: agent.jobs.profile.run_profile, under PROFILE_LIMITS workers' time limits in all."""
        from agent.jobs.profile import ProfileRequest, profile_failure, run_profile

        self.runtimes_probed()
        wall_s = PROFILE_LIMITS * context.settings.jobs.time_limit_s
        request = ProfileRequest(measure_request(command, context, within(context, wall_s)))
        progress = Progress(context)
        reports = stopped_after(wall_s, context, lambda: run_profile(request, self.device(), progress.start,
                                                                     progress.update))
        return reports_outcome(reports, lambda r: "layers" in (r.profile or {}),
                               lambda: profile_failure(reports) or ProfileError("nothing could be profiled"))

    def select(self, command: Command, context: JobContext) -> Outcome:
        """select: agent.jobs.select.select, under its own time limit plus SELECT_GRACE_S; the selection
        report, failed `backend_unavailable` when no candidate was admissible."""
        from agent.jobs.select import select
        from agent.selection.decision import selection_report
        from agent.selection.request import SelectRequest

        self.runtimes_probed()
        args, settings = command.args, context.settings
        model = str(resolve_model(settings.model_dir, args["model"]))
        request = SelectRequest(model, args.get("objective", "p50"), args.get("budget", 1.0),
                                time_limit_s=args.get("time_limit", 60.0),
                                memory_limit_mb=memory_limit_mb(settings.jobs.memory_limit_mb))
        wall_s = request.time_limit_s + SELECT_GRACE_S
        request.should_cancel = within(context, wall_s)
        progress = Progress(context)
        decision = stopped_after(wall_s, context, lambda: select(request, self.device(), progress.start,
                                                                 progress.update))
        report = selection_report(decision, self.device(), model)
        if decision.choice is None:
            error = failure(BackendUnavailableError("no candidate was admissible: see each one's reason"))
            return Outcome("failed", report, error.code, error.message)
        return Outcome("done", report)


class Progress:
    """A job's start/update callbacks (as the CLI's progress bar takes them) as progress events."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.position: Dict[str, Any] = {"index": 1, "total": 1, "config": ""}

    def start(self, index: int, total: int, label: str) -> None:
        """Configuration `index` of `total` starts."""
        self.position.update(index=index, total=total, config=label)
        self.context.progress((index - 1) / total, {"phase": "start", **self.position})

    def update(self, event: Dict[str, Any]) -> None:
        """A worker's progress event."""
        share = event["done"] / event["total"] if event.get("total") else 0.0
        detail: Dict[str, Any] = {key: event[key] for key in ("phase", "batch", "done", "total") if key in event}
        self.context.progress((self.position["index"] - 1 + share) / self.position["total"],
                              dict(detail, config=self.position["config"], index=self.position["index"]))


def within(context: JobContext, wall_s: float) -> Callable[[], bool]:
    """The workers' cancel poll: a `cancel` (or the agent stopping), or `wall_s` from now passed."""
    deadline = time.monotonic() + wall_s
    return lambda: context.cancelled() or time.monotonic() > deadline


def stopped_after(wall_s: float, context: JobContext, job: Callable[[], Any]) -> Any:
    """Run `job`; a worker it stopped for the wall-clock limit (not for a cancel) fails it as a `WorkerError`."""
    try:
        return job()
    except WorkerCancelled:
        if context.cancelled():
            raise
        raise WorkerError(f"{context.command.cmd} did not finish within {wall_s:g} s and was stopped") from None


def reports_outcome(reports: List[Any], fine: Callable[[Any], bool], error: Callable[[], AgentError]) -> Outcome:
    """`{"reports": [...]}`: done when one report is `fine`, else failed with `error()`'s code and message."""
    body = {"reports": [report.to_dict() for report in reports]}
    if any(fine(report) for report in reports):
        return Outcome("done", body)
    failed = failure(error())
    return Outcome("failed", body, failed.code, failed.message)


def first_failure(reports: List[Any]) -> AgentError:
    """The error of the first failed measurement, named after its configuration."""
    report = next(r for r in reports if r.status != "ok")
    error = report.error or {}
    return error_from(error.get("type", ""), f"{report.label}: {error.get('message', 'failed')}")


def measure_request(command: Command, context: JobContext, should_cancel: Callable[[], bool]) -> Any:
    """The `MeasureRequest` of a bench/eval/profile command (argument names as the CLI's options)."""
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest

    args, settings = command.args, context.settings
    request = MeasureRequest(
        model=str(resolve_model(settings.model_dir, args["model"])), kind=command.cmd,
        backends=args.get("backend"), precisions=args.get("precision"),
        threads=args.get("threads"), options=args.get("options", {}), batch=args.get("batch", [1]),
        shapes=args.get("shape", {}), eval_limit=args.get("eval_limit"),
        time_limit_s=args.get("time_limit", settings.jobs.time_limit_s), seed=args.get("seed", 0),
        memory_limit_mb=memory_limit_mb(settings.jobs.memory_limit_mb), should_cancel=should_cancel)
    if command.cmd in ("bench", "profile"):
        request.warmup = Warmup.parse(str(args.get("warmup", 10)))
        request.iterations = args.get("iterations", request.iterations)
        request.min_seconds = args.get("min_seconds", request.min_seconds)
    return request

