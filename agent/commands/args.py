"""Argument types and parsers shared by the subcommands."""

from __future__ import annotations

import argparse
from typing import Dict, List, Sequence

from agent.errors import UsageError


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


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
