"""`edge-agent compress lowrank|subset MODEL`: a smaller model written as a new bundle (docs/compress.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from agent.commands.args import positive_float, positive_int, word_list


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
    """Factorise, write the model, print the per-layer report."""
    from agent.compress.ranks import RankRule
    from agent.jobs.compress import LowRankRequest, render_lowrank
    from agent.jobs.compress import run_lowrank as lowrank
    from agent.measure.inputs import parse_shape_arg

    request = LowRankRequest(
        model=args.model, rule=RankRule(args.energy, args.rank, args.target_macs, args.target_params),
        output=args.output, conv=args.conv, layers=args.layers,
        shapes=dict(parse_shape_arg(t) for t in args.shape), force=args.force)
    request.rule.check()
    document = lowrank(request)
    print(_text(document, args.json, render_lowrank))
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
