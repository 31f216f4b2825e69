"""`edge-agent`: the command line. Thin: parses arguments, calls the jobs, renders their reports.

Every error we raise on purpose is printed as one line, `edge-agent: error: ...`, and exits with the
code of its class (see agent/errors.py); argparse's own usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from agent import __version__
from agent.errors import AgentError, UsageError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative seconds, not {text!r}")
    return value


def _int_list(text: str) -> List[int]:
    return [_positive_int(part) for part in text.split(",")]


def _word_list(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_measure_arguments(parser: argparse.ArgumentParser, latency: bool) -> None:
    parser.add_argument("model", help="a bundle folder (with manifest.json) or a .onnx / .tflite file")
    parser.add_argument("--backend", type=_word_list, action="extend", metavar="B[,B]",
                        help="run only these backends (onnxruntime, tflite); default: every available one")
    parser.add_argument("--precision", type=_word_list, action="extend", metavar="P[,P]",
                        help="run only these precisions of the bundle (fp32, fp16, int8)")
    parser.add_argument("--threads", type=_positive_int, help="runtime threads (default: every core)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a backend option, e.g. xnnpack=off or graph_optimization=basic")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2,...",
                        help="fix a dynamic input's shape")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="feed this array to the named input instead of generated data")
    parser.add_argument("--batch", type=_int_list, default=[1], metavar="N[,N]",
                        help="batch size(s) for a model whose batch dimension is dynamic (default 1)")
    parser.add_argument("--eval-limit", type=_positive_int, metavar="N",
                        help="judge accuracy on at most N evaluation samples")
    parser.add_argument("--time-limit", type=_seconds, default=300.0, metavar="S",
                        help="wall-clock limit of each configuration's worker process (default 300 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    if latency:
        parser.add_argument("--warmup", default="10", metavar="N|Ss",
                            help="warm-up calls (10), seconds (2s) or both (10,2s); default 10")
        parser.add_argument("--iterations", type=_positive_int, default=100, metavar="N",
                            help="measure at least N calls (default 100)")
        parser.add_argument("--min-seconds", type=_seconds, default=1.0, metavar="S",
                            help="and for at least S seconds (default 1)")
    parser.add_argument("--json", action="store_true", help="print the reports as a JSON array")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON reports to FILE")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="the board, and which runtimes can run here")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.add_argument("--root", default="/", help="read the board's files under this root (a captured tree)")
    bench = commands.add_parser("bench", help="latency, memory and accuracy of a model per backend and precision")
    _add_measure_arguments(bench, latency=True)
    evaluate = commands.add_parser("eval", help="accuracy and FP32 fidelity of a model per backend and precision")
    _add_measure_arguments(evaluate, latency=False)
    return parser


def _pairs(values: Sequence[str], flag: str) -> Dict[str, str]:
    pairs = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} takes NAME=VALUE, not {text!r}")
        pairs[name] = value
    return pairs


def _measure_request(args: argparse.Namespace) -> Any:
    from agent.jobs import MeasureRequest
    from agent.measure.inputs import parse_input_arg, parse_shape_arg
    from agent.measure.latency import Warmup

    request = MeasureRequest(
        model=args.model, kind=args.command, backends=args.backend, precisions=args.precision,
        threads=args.threads, options=_pairs(args.option, "--option"), batch=args.batch,
        shapes=dict(parse_shape_arg(t) for t in args.shape), inputs=dict(parse_input_arg(t) for t in args.input),
        eval_limit=args.eval_limit, time_limit_s=args.time_limit, seed=args.seed)
    if args.command == "bench":
        request.warmup = Warmup.parse(args.warmup)
        request.iterations = args.iterations
        request.min_seconds = args.min_seconds
    return request


def _measure(args: argparse.Namespace) -> int:
    from agent import jobs, report
    from agent.progress import Progress

    request = _measure_request(args)
    progress = Progress()
    try:
        reports = jobs.run(request, jobs.device_section(), progress.start, progress.update)
    finally:
        progress.close()
    failed = [r for r in reports if r.status != "ok"]
    if len(failed) == len(reports):
        raise _reraise(failed[0])
    if args.output:
        Path(args.output).write_text(report.to_json(reports) + "\n", encoding="utf-8")
    print(report.to_json(reports) if args.json else report.render_table(reports))
    return _reraise(failed[0]).exit_code if failed else 0


def _reraise(failed: Any) -> AgentError:
    from agent import errors

    kind = getattr(errors, failed.error["type"], errors.WorkerError)
    return kind(f"{failed.label}: {failed.error['message']}")


def _info(args: argparse.Namespace) -> int:
    from agent import jobs

    info = jobs.info(args.root)
    print(json.dumps(info, indent=2) if args.json else jobs.render_info(info))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _info(args) if args.command == "info" else _measure(args)
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
