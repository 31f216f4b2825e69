"""Argument types and parsers shared by the subcommands."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent.errors import UsageError


def _positive(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero."""
    return int(_positive(int, text, "a positive integer"))


def positive_float(text: str) -> float:
    """An argparse type: a number above zero."""
    return float(_positive(float, text, "a positive number"))


def seconds(text: str) -> float:
    """An argparse type: non-negative seconds, `5` or `5s`."""
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative seconds, not {text!r}")
    return value


def int_list(text: str) -> List[int]:
    """An argparse type: `1,8,32`."""
    return [positive_int(part) for part in text.split(",")]


def word_list(text: str) -> List[str]:
    """An argparse type: `onnxruntime,tflite`."""
    return [part.strip() for part in text.split(",") if part.strip()]


def pairs(values: Sequence[str], flag: str) -> Dict[str, str]:
    """`NAME=VALUE` options into a dict, or a `UsageError` naming the flag."""
    found = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} takes NAME=VALUE, not {text!r}")
        found[name] = value
    return found


def service_options(parser: argparse.ArgumentParser, config: str, variables: str, local: str) -> None:
    """The options of a long-running service (`run`, `coordinator`): its settings file (none with --local),
    the local profile, and the log level."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"the settings file (default {config}, none with --local); {variables} variables "
                             "override it")
    parser.add_argument("--local", action="store_true", help=f"the local profile: {local}")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="what to log on stderr (the journal under systemd); default info")


def settings_path(args: argparse.Namespace, config: str) -> Optional[str]:
    """The settings file a service reads: the one given, else `config` unless --local."""
    return args.config or (None if args.local else config)
