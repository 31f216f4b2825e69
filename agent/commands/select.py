"""`edge-agent select MODEL`: the fastest configuration that keeps accuracy, measured on this board."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.commands.args import int_list, positive_int, seconds, word_list


def register(commands: Any) -> None:
    """Add the `select` parser."""
    parser = commands.add_parser("select", help="choose the fastest backend/precision/threads that keeps accuracy")
    parser.add_argument("model", help="a bundle folder (with manifest.json) or a .onnx / .tflite file")
    parser.add_argument("--budget", type=float, default=1.0, metavar="POINTS",
                        help="Top-1 points a candidate may lose against the FP32 reference (default 1.0)")
    parser.add_argument("--min-cosine", type=float, default=0.99, metavar="C",
                        help="unlabelled models: least mean cosine to the FP32 reference's outputs (default 0.99)")
    parser.add_argument("--min-agreement", type=float, metavar="A",
                        help="unlabelled models: least top-1 agreement with the FP32 reference "
                             "(default 1 - budget/100)")
    parser.add_argument("--objective", choices=("p50", "p99", "throughput", "energy"), default="p50",
                        help="what the race minimises (throughput: maximises); energy where the board reports power")
    parser.add_argument("--time-limit", type=seconds, default=60.0, metavar="S",
                        help="wall-clock limit of the whole selection (default 60 s)")
    parser.add_argument("--backend", type=word_list, action="extend", metavar="B[,B]",
                        help="race only these backends (default: every available one)")
    parser.add_argument("--threads", type=int_list, metavar="N[,N]",
                        help="thread counts to race (default: 1, 2, 4, ... and every core)")
    parser.add_argument("--eval-limit", type=positive_int, metavar="N",
                        help="judge accuracy on at most N evaluation samples")
    parser.add_argument("--refresh", action="store_true", help="measure again even if a stored decision fits")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    parser.add_argument("--json", action="store_true", help="print the selection report as JSON")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Select (or reuse the stored decision), print the table or JSON; exit 6 when nothing is admissible."""
    import json

    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.errors import BackendUnavailableError
    from agent.jobs.select import select
    from agent.selection.decision import render, selection_report
    from agent.selection.request import SelectRequest

    request = SelectRequest(args.model, args.objective, args.budget, args.min_cosine, args.min_agreement,
                            args.time_limit, args.backend, args.threads, args.eval_limit, args.refresh, args.seed)
    device = device_section()
    progress = Progress()
    try:
        decision = select(request, device, progress.start, progress.update)
    finally:
        progress.close()
    report = selection_report(decision, device, args.model)
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text if args.json else render(decision, args.model))
    if decision.choice is None:
        return BackendUnavailableError.exit_code
    return 0
