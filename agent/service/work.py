"""The work of each job, as the job process runs it (agent/service/job_process.py): info, deploy,
bench/eval, profile and select, each through the job function the CLI calls (`agent.jobs.info.info`,
`agent.service.deploy.deploy`, `agent.jobs.measure.run_measure`, `agent.jobs.profile.run_profile`,
`agent.jobs.select.select`): one worker process per configuration, with the daemon's memory limit and
the cancel poll, the job's progress relayed as events. Model names are resolved inside the model store
only. A function takes the validated `Command` and its `Context` and returns an `Outcome` (or raises
an `AgentError`, which fails the job with the error's code).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Union

from agent.backends.registry import gpu_device_node
from agent.device.detect import device_section
from agent.device.sysfs import SysfsReader
from agent.device.telemetry import read_memory_mb
from agent.errors import (
    AgentError,
    BackendUnavailableError,
    ProfileError,
    WorkerError,
    error_from,
)
from agent.jobs.info import info
from agent.jobs.measure import run_measure
from agent.jobs.profile import ProfileRequest, profile_failures, run_profile
from agent.jobs.select import apply_choice, select, stored_or_select
from agent.measure.isolate import WorkerCancelled
from agent.measure.latency import Warmup
from agent.measure.plan import MeasureRequest
from agent.mqtt.protocol import Command
from agent.selection.decision import selection_report
from agent.selection.request import SelectRequest
from agent.service.deploy import deploy
from agent.service.model_store import resolve_model
from agent.service.replies import Outcome, failure

AUTO_MEMORY_SHARE = 0.6  # `jobs.memory_limit_mb = auto`: this share of MemAvailable when the job starts...
AUTO_MEMORY_FLOOR_MB = 512  # ...but never less: a worker's runtime maps ~200-500 MB before any model
SELECT_GRACE_S = 120.0  # a selection's own time limit covers its race, not loading and judging
PROFILE_LIMITS = 4  # a profile's wall-clock limit, in workers' time limits (configurations, scaling, sections)


class Context(Protocol):
    """What a job's work may use (the job process's `JobContext`): its settings, the cancel flag, progress."""

    command: Command
    settings: Any

    def cancelled(self) -> bool:
        """Whether the job should stop now."""

    def check_cancelled(self) -> None:
        """Raise `WorkerCancelled` when the job should stop."""

    def progress(self, fraction: Optional[float], detail: Dict[str, Any]) -> None:
        """Report progress (the daemon rate-limits the events)."""


def run_info(command: Command, context: Context) -> Outcome:
    """`edge-agent info --json`: the board and its runtimes."""
    return Outcome("done", info())


def run_deploy(command: Command, context: Context) -> Outcome:
    """Download, check and install a bundle archive (agent.service.deploy)."""
    return Outcome("done", deploy(command.args, context.settings.model_dir, context.settings.deploy,
                                  context.check_cancelled))


def run_bench_or_eval(command: Command, context: Context) -> Outcome:
    """bench/eval: every configuration asked for, through agent.jobs.measure.run_measure."""
    request = measure_request(command, context, context.cancelled)
    progress = Progress(context)
    if request.backends == ["auto"]:  # as the CLI: the configuration `select` chose (selecting first)
        request = apply_choice(request, stored_or_select(request.model, progress, request))
    reports = run_measure(request, device_section(), progress.start, progress.update)
    return reports_outcome(reports, lambda r: r.status == "ok", lambda: first_failure(reports))


def run_profile_job(command: Command, context: Context) -> Outcome:
    """profile: agent.jobs.profile.run_profile, under PROFILE_LIMITS workers' time limits in all."""
    wall_s = PROFILE_LIMITS * context.settings.jobs.time_limit_s
    request = ProfileRequest(measure_request(command, context, within(context, wall_s)))
    progress = Progress(context)
    reports = stopped_after(wall_s, context, lambda: run_profile(request, device_section(), progress.start,
                                                                 progress.update))
    return reports_outcome(reports, lambda r: "layers" in (r.profile or {}),
                           lambda: (profile_failures(reports) or [ProfileError("nothing could be profiled")])[0])


def run_select(command: Command, context: Context) -> Outcome:
    """select: agent.jobs.select.select, under its own time limit plus SELECT_GRACE_S; the selection
    report, failed `backend_unavailable` when no candidate was admissible."""
    args, settings = command.args, context.settings
    model = str(resolve_model(settings.model_dir, args["model"]))
    request = SelectRequest(model, args.get("objective", "p50"), args.get("budget", 1.0),
                            time_limit_s=args.get("time_limit", 60.0),
                            memory_limit_mb=memory_limit_mb(settings.jobs.memory_limit_mb, args.get("memory_limit_mb")))
    wall_s = request.time_limit_s + SELECT_GRACE_S
    request.should_cancel = within(context, wall_s)
    progress = Progress(context)
    device = device_section()
    decision = stopped_after(wall_s, context, lambda: select(request, device, progress.start, progress.update))
    report = selection_report(decision, device, model)
    if decision.choice is None:
        error = failure(BackendUnavailableError("no candidate was admissible: see each one's reason"))
        return Outcome("failed", report, error.code, error.message)
    return Outcome("done", report)


WORK: Dict[str, Callable[[Command, Context], Outcome]] = {
    "info": run_info, "deploy": run_deploy, "bench": run_bench_or_eval, "eval": run_bench_or_eval,
    "profile": run_profile_job, "select": run_select}


def memory_limit_mb(setting: Union[str, int], asked: Optional[int] = None) -> Optional[int]:
    """The workers' RLIMIT_AS in MB: the configured one (`auto`: AUTO_MEMORY_SHARE of the memory available
    now, at least AUTO_MEMORY_FLOOR_MB, so the board keeps the rest of what is free for its own work; none on
    an NVIDIA GPU board, whose CUDA reserves more address space than that), lowered to a command's
    `memory_limit_mb`, which can never raise it."""
    configured: Optional[int]
    if setting != "auto":
        configured = int(setting) or None
    elif gpu_device_node() is not None:
        configured = None
    else:
        available = read_memory_mb(SysfsReader("/"))["available"]
        configured = None if available is None else max(AUTO_MEMORY_FLOOR_MB, int(AUTO_MEMORY_SHARE * available))
    return asked if configured is None else min(configured, asked or configured)


class Progress:
    """A job's start/update callbacks (as the CLI's progress bar takes them) as progress events."""

    def __init__(self, context: Context) -> None:
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


def within(context: Context, wall_s: float) -> Callable[[], bool]:
    """The workers' cancel poll: a `cancel` (or the agent stopping), or `wall_s` from now passed."""
    deadline = time.monotonic() + wall_s
    return lambda: context.cancelled() or time.monotonic() > deadline


def stopped_after(wall_s: float, context: Context, job: Callable[[], Any]) -> Any:
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


def measure_request(command: Command, context: Context, should_cancel: Callable[[], bool]) -> MeasureRequest:
    """The `MeasureRequest` of a bench/eval/profile command (argument names as the CLI's options)."""
    args, settings = command.args, context.settings
    request = MeasureRequest(
        model=str(resolve_model(settings.model_dir, args["model"])), kind=command.cmd,
        backends=args.get("backend"), precisions=args.get("precision"),
        threads=args.get("threads"), options=args.get("options", {}), batch=args.get("batch", [1]),
        shapes=args.get("shape", {}), eval_limit=args.get("eval_limit"),
        time_limit_s=args.get("time_limit", settings.jobs.time_limit_s), seed=args.get("seed", 0),
        memory_limit_mb=memory_limit_mb(settings.jobs.memory_limit_mb, args.get("memory_limit_mb")),
        should_cancel=should_cancel)
    if command.cmd in ("bench", "profile"):
        request.warmup = Warmup.parse(str(args.get("warmup", 10)))
        request.iterations = args.get("iterations", request.iterations)
        request.min_seconds = args.get("min_seconds", request.min_seconds)
        request.rounds = args.get("rounds", request.rounds)
    return request

