"""`edge-agent compare BASELINE CANDIDATE`: a compressed model against its baseline, in one table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.commands.measure import add_model_arguments, measure_request


def register(commands: Any) -> None:
    """Add the `compare` parser: the model options of `bench`, applied to both models."""
    parser = commands.add_parser(
        "compare", help="parameters, MACs, latency and accuracy of a candidate model against a baseline")
    add_model_arguments(parser, latency=True)
    parser.add_argument("candidate", help="the compressed model: a bundle folder or a .onnx / .tflite file")
    parser.add_argument("--force", action="store_true",
                        help="compare models whose input/output tensors differ (refused otherwise)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Measure both, print the table or JSON; the exit code is the first failure's (0 when none)."""
    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.errors import AgentError
    from agent.jobs import compare

    progress = Progress()
    try:
        document = compare.run_compare(measure_request(args), args.candidate, device_section(),
                                       progress.start, progress.update, force=args.force)
    finally:
        progress.close()
    if not document["pairs"]:
        raise AgentError("no configuration of the baseline runs on a backend the candidate also runs on: "
                         "nothing to compare")
    text = json.dumps(document, indent=2, allow_nan=False)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text if args.json else compare.render_compare(document))
    failure = compare.first_error(document)
    return failure.exit_code if failure else 0
