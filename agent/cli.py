"""`edge-agent`: the command line. Thin: each subcommand lives in agent/commands/.

Every error we raise on purpose is printed as one line, `edge-agent: error: ...`, and exits with the
code of its class (see agent/errors.py); argparse's own usage errors are one line too, and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional, Sequence

from agent import __version__
from agent.commands import compare, compress, coordinator, fleet, info, measure, peaks, profile, run, select, zoo
from agent.errors import AgentError

# The subcommands, in the order `edge-agent --help` lists them.
COMMANDS = (info, measure, select, profile, compare, compress, zoo, peaks, run, fleet, coordinator)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other error of edge-agent;
    `--help` still prints the full usage. Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        """Print `edge-agent [COMMAND]: error: MESSAGE (see --help)` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = OneLineParser(
        prog="edge-agent", description="Measure how fast and how accurately a model runs on this board.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
