"""docs/flags.md cannot drift from the CLI: every edge-agent flag its table names exists in that
subcommand's argparse parser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

from agent.cli import build_parser

DOC = Path(__file__).resolve().parent.parent / "docs" / "flags.md"
_CELL = re.compile(r"(?<!\\)\|")
_SPAN = re.compile(r"`([^`]+)`")


def subcommand_flags(parser: argparse.ArgumentParser) -> Dict[str, Set[str]]:
    """Each subcommand of `edge-agent` with the option strings its parser takes."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {flag for action in sub._actions for flag in action.option_strings}
            for name, sub in commands.choices.items()}


def named_flags(markdown: str, commands: Set[str]) -> List[Tuple[str, str]]:
    """(command, flag) for every `--flag` of a code span that starts with an edge-agent command
    (`bench --warmup 2s`) in the last column of the document's table rows."""
    found: List[Tuple[str, str]] = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in _CELL.split(line.strip())]
        if len(cells) < 3 or set(cells[-2]) <= set("-: "):
            continue
        for span in _SPAN.findall(cells[-2]):
            words = span.replace("\\|", "|").split()
            if words and words[0] in commands:
                found += [(words[0], word.split("=")[0]) for word in words[1:] if word.startswith("--")]
    return found


def problems(markdown: str, flags: Dict[str, Set[str]]) -> List[str]:
    """A line for each flag the document names that the parser lacks."""
    return [f"docs/flags.md names `{command} {flag}`, which `edge-agent {command}` does not take"
            for command, flag in named_flags(markdown, set(flags)) if flag not in flags[command]]


def test_every_flag_in_docs_flags_exists_in_the_cli() -> None:
    flags = subcommand_flags(build_parser())
    text = DOC.read_text()
    named = named_flags(text, set(flags))
    assert {command for command, _ in named} >= {"bench", "eval", "profile", "select", "peaks"}
    assert len(named) >= 40, named
    assert ("bench", "--export-times") in named and ("profile", "--export-profile") in named
    assert problems(text, flags) == []


def test_the_check_catches_a_flag_that_does_not_exist() -> None:
    flags = subcommand_flags(build_parser())
    row = ("| warm-up | `--warmUp=MS` | `--warmup_runs=N` | — | `bench --warm-up N`, `bench --iterations N`, "
           "`eval --iterations N`, `select --threads 1\\|2` |\n")
    assert problems(row, flags) == [
        "docs/flags.md names `bench --warm-up`, which `edge-agent bench` does not take",
        "docs/flags.md names `eval --iterations`, which `edge-agent eval` does not take"]
