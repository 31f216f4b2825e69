"""A one-line progress display on stderr, shown only on a terminal and only after the first second."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional, TextIO

_BAR_WIDTH = 20


class Progress:
    """Shows which configuration runs and its phase; silent when stderr is not a terminal."""

    def __init__(self, stream: Optional[TextIO] = None, delay_s: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.delay_s = delay_s
        self.prefix = ""
        self.shown = False

    def start(self, index: int, total: int, label: str) -> None:
        """A new configuration begins."""
        self.prefix = f"[{index}/{total}] {label}"
        self._show("starting")

    def update(self, event: Dict[str, Any]) -> None:
        """A worker's progress event: a phase, and done/total where the phase counts samples."""
        phase = event.get("phase", "")
        if "total" in event and event["total"]:
            filled = int(_BAR_WIDTH * event["done"] / event["total"])
            phase += f" [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {event['done']}/{event['total']}"
        elif event.get("seconds"):
            phase += f" (at least {event['seconds']:g} s)"
        self._show(phase)

    def close(self) -> None:
        """Clear the line, so results print on a clean screen."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _show(self, text: str) -> None:
        if not self.enabled or time.monotonic() - self.started < self.delay_s:
            return
        self.stream.write(f"\r\033[K{self.prefix}: {text}")
        self.stream.flush()
        self.shown = True
