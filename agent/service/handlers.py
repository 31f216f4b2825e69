"""What each command does in the daemon: ping, info, models, bench/eval, deploy, profile/select.

A handler takes the validated `Command` and a `JobContext` and returns an `Outcome` (or raises an
`AgentError`, which fails the job with a code). Measurements go through `agent.jobs.measure.run_measure`, the same
path as the CLI: one worker process per configuration, here with the daemon's memory limit and the
cancel flag. Model names are resolved inside the model store only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from agent import __version__
from agent.backends.registry import gpu_device_node
from agent.errors import AgentError, ModelNotFoundError, ProtocolError, error_from
from agent.mqtt.protocol import Command
from agent.service.lanes import Handler, JobContext
from agent.service.replies import Outcome, failure

MODEL_EXTENSIONS = (".onnx", ".tflite")
MAX_DEPTH = 4  # a model name has at most four segments (agent.mqtt.schema)


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
    """The daemon's command handlers. `info` is probed once, in a subprocess (the runtimes are not
    imported into the daemon for it), started by `prepare` so that the first `info` does not hold
    up the quick lane."""

    def __init__(self) -> None:
        self._info: Optional[Dict[str, Any]] = None
        self._info_error: Optional[AgentError] = None
        self._probed = threading.Thread(target=self._probe, name="info-probe", daemon=True)
        self._device: Optional[Dict[str, Any]] = None

    def prepare(self) -> None:
        """Start probing the board and its runtimes in the background."""
        self._probed.start()

    def _probe(self) -> None:
        try:
            self._info = _run_cli_json("info", "--json")
        except AgentError as error:
            self._info_error = error

    def table(self) -> Dict[str, Handler]:
        """Command name -> handler, for the lanes; `profile` and `select` where this edge-agent has them."""
        handlers: Dict[str, Handler] = {"ping": self.ping, "info": self.info, "models": self.models,
                                        "bench": self.measure, "eval": self.measure, "deploy": self.deploy}
        for name in ("profile", "select"):
            if importlib.util.find_spec(f"agent.commands.{name}") is not None:
                handlers[name] = self.subcommand
        return handlers

    def ping(self, command: Command, context: JobContext) -> Outcome:
        """Alive: the agent's version."""
        return Outcome("done", {"pong": True, "version": __version__})

    def info(self, command: Command, context: JobContext) -> Outcome:
        """`edge-agent info --json`: the board and its runtimes (probed once; a failed probe is retried)."""
        if self._probed.ident is not None:  # started by prepare()
            self._probed.join()
        if self._info is None:
            self._probe()
        if self._info is None:
            error, self._info_error = self._info_error, None
            raise error or AgentError("the info probe failed")
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
        from agent.device.detect import device_section
        from agent.jobs.measure import run_measure

        if self._device is None:
            self._device = device_section()
        request = measure_request(command, context)
        position: Dict[str, Any] = {"index": 1, "total": 1, "config": ""}

        def started(index: int, total: int, label: str) -> None:
            position.update(index=index, total=total, config=label)
            context.progress((index - 1) / total, {"phase": "start", **position})

        def progressed(event: Dict[str, Any]) -> None:
            share = event["done"] / event["total"] if event.get("total") else 0.0
            detail: Dict[str, Any] = {key: event[key] for key in ("phase", "batch", "done", "total") if key in event}
            context.progress((position["index"] - 1 + share) / position["total"],
                             dict(detail, config=position["config"], index=position["index"]))

        if request.backends == ["auto"]:  # as the CLI: the configuration `select` chose (selecting first)
            from agent.jobs.select import apply_choice, stored_or_select

            request = apply_choice(request, stored_or_select(request.model))
        reports = run_measure(request, self._device, started, progressed)
        body = {"reports": [report.to_dict() for report in reports]}
        failed = [report for report in reports if report.status != "ok"]
        if len(failed) == len(reports):
            first = failure(_error_of(failed[0].error))
            return Outcome("failed", body, first.code, f"{failed[0].label}: {first.message}")
        return Outcome("done", body)

    def subcommand(self, command: Command, context: JobContext) -> Outcome:
        """profile/select: the CLI subcommand in a child process (agent.service.cli_jobs)."""
        from agent.service.cli_jobs import SELECT_GRACE_S, run_cli_job

        settings = context.settings
        limit = command.args.get("time_limit")
        wall_s = limit + SELECT_GRACE_S if command.cmd == "select" and limit else 4 * settings.jobs.time_limit_s
        return run_cli_job(command, context, resolve_model(settings.model_dir, command.args["model"]), wall_s,
                           memory_limit_mb(settings.jobs.memory_limit_mb))


def measure_request(command: Command, context: JobContext) -> Any:
    """The `MeasureRequest` of a bench/eval command (argument names as the CLI's options)."""
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest

    args, settings = command.args, context.settings
    request = MeasureRequest(
        model=str(resolve_model(settings.model_dir, args["model"])), kind=command.cmd,
        backends=args.get("backend"), precisions=args.get("precision"),
        threads=args.get("threads"), options=args.get("options", {}), batch=args.get("batch", [1]),
        shapes=args.get("shape", {}), eval_limit=args.get("eval_limit"),
        time_limit_s=args.get("time_limit", settings.jobs.time_limit_s), seed=args.get("seed", 0),
        memory_limit_mb=memory_limit_mb(settings.jobs.memory_limit_mb), should_cancel=context.cancelled)
    if command.cmd == "bench":
        request.warmup = Warmup.parse(str(args.get("warmup", 10)))
        request.iterations = args.get("iterations", request.iterations)
        request.min_seconds = args.get("min_seconds", request.min_seconds)
    return request


def _error_of(error: Optional[Dict[str, str]]) -> AgentError:
    error = error or {}
    return error_from(error.get("type", ""), error.get("message", "failed"))


def _run_cli_json(*args: str) -> Dict[str, Any]:
    """Run `edge-agent ARGS` in a fresh interpreter and parse its JSON output."""
    from agent.errors import WorkerError

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                              timeout=300, env=env)
    except subprocess.TimeoutExpired:
        raise WorkerError(f"edge-agent {' '.join(args)} did not finish in 300 s") from None
    if done.returncode != 0:
        raise WorkerError(f"edge-agent {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(done.stdout))
