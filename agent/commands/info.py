"""`edge-agent info`: the board, and which runtimes can run here."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(commands: Any) -> None:
    """Add the `info` parser."""
    parser = commands.add_parser("info", help="the board, and which runtimes can run here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--root", default="/", help="read the board's files under this root (a captured tree)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Detect and print."""
    from agent.jobs.info import info, render_info

    report = info(args.root)
    print(json.dumps(report, indent=2) if args.json else render_info(report))
    return 0
