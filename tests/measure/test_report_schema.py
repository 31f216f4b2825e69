"""The report's schema does not move: a real `bench` and `eval` of models/digits, every report's nested key
structure compared with tests/fixtures/report_schema.txt, in order (values may differ, keys and nesting not).

One line per key path, `<kind> <backend/precision> <path>`; `[]` stands for every element of a list. Below
the board-dependent parts (`BOARD_PARTS`) only the part itself is listed. Regenerate the file on purpose
only, when the schema changes on purpose: `EDGE_AGENT_WRITE_SCHEMA=1 pytest tests/measure/test_report_schema.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, List

from support.cli import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_schema.txt"
# What the board has (GPUs, Jetson details, CPU clusters, thermal zones) decides what is under these.
BOARD_PARTS = ("device.cuda", "device.tensorrt", "device.jetson", "device.cpu.clusters",
               "thermal.temperature_c.zones")
RUNS = (("bench", "--iterations", "5", "--min-seconds", "0", "--eval-limit", "20"), ("eval", "--eval-limit", "20"))


def key_paths(value: Any, path: str = "") -> Iterator[str]:
    """Every key path under `value`, depth first in key order; a list's elements share `[]` (each path once)."""
    if path in BOARD_PARTS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else key
            yield inner
            yield from key_paths(item, inner)
    elif isinstance(value, list):
        seen: List[str] = []
        for item in value:
            seen += [p for p in key_paths(item, path + "[]") if p not in seen]
        yield from seen


def schema_lines(kind: str, reports: List[Any]) -> List[str]:
    """The fixture's lines for one command's reports."""
    return [f"{kind} {r['backend']['name']}/{r['model']['precision']} {p}" for r in reports for p in key_paths(r)]


def test_bench_and_eval_reports_keep_their_key_structure(digits: Path) -> None:
    lines: List[str] = []
    for kind, *args in RUNS:
        result = run_cli(kind, str(digits), "--backend", "onnxruntime,tflite", "--json", *args)
        assert result.code == 0, result.stderr
        lines += schema_lines(kind, result.json())
    if os.environ.get("EDGE_AGENT_WRITE_SCHEMA") == "1":
        FIXTURE.write_text("\n".join(lines) + "\n")
    assert lines == FIXTURE.read_text().splitlines()
