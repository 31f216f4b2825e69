"""The progress line: shown on a terminal after its delay, silent otherwise."""

from __future__ import annotations

import io

from agent.commands.progress import Progress


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal, as stderr is when a person runs the CLI."""

    def isatty(self) -> bool:
        return True


def test_progress_shows_phase_and_count_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress(stream, delay_s=0.0)
    progress.start(2, 3, "tflite/int8")
    progress.update({"event": "progress", "phase": "outputs", "done": 5, "total": 10})
    assert stream.getvalue().endswith("[2/3] tflite/int8: outputs [##########..........] 5/10")
    progress.update({"event": "progress", "phase": "measure", "seconds": 2.0})
    assert stream.getvalue().endswith("measure (at least 2 s)")
    progress.close()
    assert stream.getvalue().endswith("\r\033[K")


def test_progress_is_silent_off_a_terminal_and_during_its_delay() -> None:
    piped = io.StringIO()
    Progress(piped, delay_s=0.0).start(1, 1, "onnxruntime/fp32")
    assert piped.getvalue() == ""
    early = Terminal()
    progress = Progress(early, delay_s=60.0)
    progress.start(1, 1, "onnxruntime/fp32")
    progress.close()
    assert early.getvalue() == ""
