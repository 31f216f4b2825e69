"""`edge-agent bench` and `edge-agent eval`: every configuration of a model, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from agent.commands.args import int_list, pairs, positive_int, seconds, word_list
from agent.errors import AgentError, error_from


def add_model_arguments(parser: argparse.ArgumentParser, latency: bool) -> None:
    """The model, configuration and input options that `bench`, `eval` (and later commands) share."""
    parser.add_argument("model", help="a bundle folder (with manifest.json) or a .onnx / .tflite file")
    parser.add_argument("--backend", type=word_list, action="extend", metavar="B[,B]",
                        help="run only these backends (onnxruntime, tflite, tensorrt); default: every available "
                             "one; `auto`: the configuration `edge-agent select` chose (selecting first if needed)")
    parser.add_argument("--precision", type=word_list, action="extend", metavar="P[,P]",
                        help="run only these precisions of the bundle (fp32, fp16, int8)")
    parser.add_argument("--derive", action="store_true",
                        help="also run the precisions backends make on the device from the FP32 file "
                             "(ONNX Runtime INT8/FP16, TensorRT FP16/INT8 engines)")
    parser.add_argument("--threads", type=positive_int,
                        help="runtime threads (default: the physical cores this process may run on)")
    parser.add_argument("--allow-oversubscribe", action="store_true",
                        help="allow --threads above the CPUs this process may run on")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a backend option, e.g. xnnpack=off or graph_optimization=basic")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2,...",
                        help="fix a dynamic input's shape")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy|VALUE",
                        help="feed this array, or this number (e.g. sr=16000), to the named input instead "
                             "of generated data; the profile folds the control flow it steers")
    parser.add_argument("--batch", type=int_list, default=[1], metavar="N[,N]",
                        help="batch size(s) for a model whose batch dimension is dynamic (default 1)")
    parser.add_argument("--eval-limit", type=positive_int, metavar="N",
                        help="judge accuracy on at most N evaluation samples")
    parser.add_argument("--time-limit", type=seconds, default=300.0, metavar="S",
                        help="wall-clock limit of each configuration's worker process (default 300 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    if latency:
        parser.add_argument("--warmup", default="10", metavar="N|Ss",
                            help="warm-up calls (10), seconds (2s) or both (10,2s); default 10")
        parser.add_argument("--iterations", type=positive_int, default=100, metavar="N",
                            help="measure at least N calls (default 100)")
        parser.add_argument("--min-seconds", type=seconds, default=1.0, metavar="S",
                            help="and for at least S seconds (default 1)")
        parser.add_argument("--rounds", type=positive_int, default=3, metavar="N",
                            help="split the timed loop into N back-to-back rounds whose medians must agree "
                                 "(default 3; docs/report.md, Stability)")
    parser.add_argument("--json", action="store_true", help="print the reports as a JSON array")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON reports to FILE")


def register(commands: Any) -> None:
    """Add the `bench` and `eval` parsers."""
    bench = commands.add_parser("bench", help="latency, memory and accuracy of a model per backend and precision")
    add_model_arguments(bench, latency=True)
    bench.add_argument("--export-times", metavar="FILE",
                       help="write every timed call (round, start, latency) to FILE as JSON, like trtexec "
                            "--exportTimes")
    evaluate = commands.add_parser("eval", help="accuracy and FP32 fidelity of a model per backend and precision")
    add_model_arguments(evaluate, latency=False)
    for parser in (bench, evaluate):
        parser.add_argument("--csv", action="store_true", help="print the table as CSV, one row per configuration")
        parser.set_defaults(handler=run)


def measure_request(args: argparse.Namespace) -> Any:
    """The `MeasureRequest` the parsed arguments describe."""
    from agent.measure.inputs import parse_input_arg, parse_shape_arg
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest

    request = MeasureRequest(
        model=args.model, kind=args.command, backends=args.backend, precisions=args.precision,
        threads=args.threads, options=pairs(args.option, "--option"), batch=args.batch,
        shapes=dict(parse_shape_arg(t) for t in args.shape), inputs=dict(parse_input_arg(t) for t in args.input),
        eval_limit=args.eval_limit, time_limit_s=args.time_limit, seed=args.seed, derive=args.derive,
        allow_oversubscribe=args.allow_oversubscribe)
    if hasattr(args, "warmup"):
        request.warmup = Warmup.parse(args.warmup)
        request.iterations = args.iterations
        request.min_seconds = args.min_seconds
        request.rounds = args.rounds
        request.keep_times = bool(getattr(args, "export_times", None))
    return request


def run(args: argparse.Namespace) -> int:
    """Measure every configuration, print the table or JSON; the exit code is the first failure's."""
    from agent import report
    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.jobs.measure import run_measure

    request = measure_request(args)
    progress = Progress()
    try:
        if request.backends and "auto" in request.backends:
            request = chosen(request, progress)
        reports = run_measure(request, device_section(), progress.start, progress.update)
    finally:
        progress.close()
    failed = [r for r in reports if r.status != "ok"]
    if len(failed) == len(reports):
        raise failure(failed[0])
    if args.output:
        Path(args.output).write_text(report.to_json(reports) + "\n", encoding="utf-8")
    if getattr(args, "export_times", None):
        Path(args.export_times).write_text(report.times_json(reports) + "\n", encoding="utf-8")
    render = report.to_json if args.json else report.to_csv if args.csv else report.render_table
    print(render(reports))
    print_failures([failure(r) for r in failed])
    return failure(failed[0]).exit_code if failed else 0


def chosen(request: Any, progress: Any) -> Any:
    """`--backend auto`: the request narrowed to the stored choice of `edge-agent select`, selecting first
    when there is none."""
    from agent.errors import UsageError
    from agent.jobs.select import apply_choice, stored_or_select

    if request.backends != ["auto"]:
        raise UsageError("--backend auto runs the chosen configuration alone: give no other backend")
    return apply_choice(request, stored_or_select(request.model, progress=progress))


def print_failures(errors: Sequence[AgentError]) -> None:
    """Each failure of a run that still printed its reports as one line on stderr (JSON or not), as
    `cli.main` prints an error that stops a command."""
    for error in errors:
        print(f"edge-agent: error: {error}", file=sys.stderr)


def failure(failed: Any) -> AgentError:
    """The `AgentError` a failed report stands for, named after its configuration."""
    return error_from(failed.error["type"], f"{failed.label}: {failed.error['message']}")
