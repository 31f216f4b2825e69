"""`edge-agent compress lowrank|subset MODEL`: a smaller model written as a new bundle (docs/compress.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any, List, Optional

from agent.commands.args import positive_float, positive_int, seconds, word_list


def _energies(text: str) -> List[float]:
    values = [positive_float(part) for part in text.split(",") if part.strip()]
    if not values or max(values) > 1:
        raise argparse.ArgumentTypeError(f"expected kept energies in (0, 1] such as 0.5,0.9,0.99, not {text!r}")
    return values


def register(commands: Any) -> None:
    """Add `compress lowrank` and `compress subset`."""
    compress = commands.add_parser("compress", help="write a smaller model: low-rank factorisation, class subset")
    methods = compress.add_subparsers(dest="method", required=True, metavar="METHOD")
    lowrank = methods.add_parser("lowrank", help="factorise Gemm/MatMul (SVD) and Conv (Tucker-2 or spatial) layers")
    lowrank.add_argument("model", help="a bundle folder with an FP32 ONNX file, or a .onnx file")
    rule = lowrank.add_argument_group("the rank rule (exactly one)")
    rule.add_argument("--energy", type=float, metavar="E",
                      help="per layer, the smallest rank keeping E of the squared singular values (0 < E <= 1)")
    rule.add_argument("--rank", type=positive_int, metavar="R", help="the same rank R for every layer")
    rule.add_argument("--target-macs", type=positive_float, metavar="T",
                      help="the whole model's MACs at most T (a fraction of the original when T <= 1)")
    rule.add_argument("--target-params", type=positive_float, metavar="T",
                      help="the whole model's parameters at most T (a fraction of the original when T <= 1)")
    lowrank.add_argument("--conv", choices=("tucker2", "spatial"), default="tucker2",
                         help="the form of k x k convolutions: Tucker-2 (1x1 -> kxk -> 1x1, default) or spatial "
                              "(kx1 -> 1xk); 1x1 convolutions always take the SVD")
    lowrank.add_argument("--layers", type=word_list, action="extend", metavar="NAME[,NAME]",
                         help="factorise only these layers (default: every one that can be)")
    sweep = lowrank.add_argument_group("a sweep: one model per energy, each measured on ONNX Runtime")
    sweep.add_argument("--sweep", type=_energies, metavar="E[,E]",
                       help="write and measure one model per kept energy (instead of a rank rule); -o names the folder")
    sweep.add_argument("--plot", action="store_true", help="also draw sweep.png (needs the plot extra)")
    sweep.add_argument("--threads", type=positive_int, help="runtime threads (default: the physical cores)")
    sweep.add_argument("--warmup", default="10", metavar="N|Ss", help="warm-up calls or seconds (default 10)")
    sweep.add_argument("--iterations", type=positive_int, default=100, metavar="N",
                       help="measure at least N calls (default 100)")
    sweep.add_argument("--min-seconds", type=seconds, default=1.0, metavar="S",
                       help="and for at least S seconds (default 1)")
    _common(lowrank)
    lowrank.set_defaults(handler=run_lowrank)
    subset = methods.add_parser("subset", help="cut a classifier's final layer to the classes a deployment needs")
    subset.add_argument("model", help="a bundle folder with an FP32 ONNX file, or a .onnx file")
    subset.add_argument("--classes", type=word_list, action="extend", required=True, metavar="C[,C]",
                        help="the classes to keep, in this order: labels of the bundle or class indices")
    _common(subset)
    subset.set_defaults(handler=run_subset)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2,...",
                        help="fix a dynamic input's shape (the counts and positions depend on it)")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="where to write the model (default: beside MODEL, named MODEL-<method>)")
    parser.add_argument("--force", action="store_true", help="replace PATH when it exists")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_lowrank(args: argparse.Namespace) -> int:
    """Factorise, write the model, print the per-layer report; or, with --sweep, write and measure one model
    per energy and print the accuracy–speed-up table."""
    from agent.compress.ranks import RankRule
    from agent.errors import UsageError
    from agent.jobs.compress import LowRankRequest, render_lowrank
    from agent.jobs.compress import run_lowrank as lowrank
    from agent.measure.inputs import parse_shape_arg

    request = LowRankRequest(
        model=args.model, rule=RankRule(args.energy, args.rank, args.target_macs, args.target_params),
        output=args.output, conv=args.conv, layers=args.layers,
        shapes=dict(parse_shape_arg(t) for t in args.shape), force=args.force)
    if args.sweep is None:
        if args.plot:
            raise UsageError("--plot draws a sweep: give --sweep E[,E]")
        request.rule.check()
        print(_text(lowrank(request), args.json, render_lowrank))
        return 0
    if request.rule != RankRule():
        raise UsageError("--sweep is the rank rule: give no --energy, --rank, --target-macs or --target-params")
    return _sweep(args, request)


def _sweep(args: argparse.Namespace, request: Any) -> int:
    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.jobs.sweep import render_sweep, run_sweep
    from agent.measure.latency import Warmup
    from agent.measure.plan import MeasureRequest

    if args.plot:
        from agent.profile.plot import require_matplotlib

        require_matplotlib()  # fail before anything is written or measured
    settings = MeasureRequest(model=args.model, threads=args.threads, warmup=Warmup.parse(args.warmup),
                              iterations=args.iterations, min_seconds=args.min_seconds)
    progress = Progress()
    try:
        document = run_sweep(request, args.sweep, settings, device_section(), progress.start, progress.update,
                             plot=args.plot)
    finally:
        progress.close()
    print(_text(document, args.json, render_sweep))
    return 0


def run_subset(args: argparse.Namespace) -> int:
    """Cut the classifier, write the model, its labels and data; print what was kept."""
    from agent.jobs.compress import SubsetRequest, render_subset
    from agent.jobs.compress import run_subset as subset
    from agent.measure.inputs import parse_shape_arg

    document = subset(SubsetRequest(args.model, args.classes, args.output,
                                    dict(parse_shape_arg(t) for t in args.shape), args.force))
    print(_text(document, args.json, render_subset))
    return 0


def _text(document: Any, as_json: bool, render: Optional[Any]) -> str:
    return json.dumps(document, indent=2, allow_nan=False) if as_json or render is None else render(document)
