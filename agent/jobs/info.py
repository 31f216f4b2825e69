"""The `info` job: the board, and every runtime with its version or the reason it cannot run here."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from agent import __version__
from agent.backends.registry import runtime_statuses
from agent.device.detect import device_section
from agent.report import runtime_label, utc_now

INFO_SCHEMA = "edge-agent/info/1"


def info(root: str = "/") -> Dict[str, Any]:
    """`edge-agent info`: the board, and every runtime with its version or why it cannot run here.

    Runtimes are probed in this process, so they describe this machine: for a captured tree (`root`
    other than `/`) they are left out."""
    live = os.path.realpath(root) == "/"
    return {
        "schema": INFO_SCHEMA, "created": utc_now(), "agent": {"version": __version__},
        "device": device_section(root).to_dict(),
        "runtimes": [s.to_dict() for s in runtime_statuses()] if live else None,
    }


def render_info(report: Dict[str, Any]) -> str:
    """`info` as readable lines: the board's fields, then one line per runtime."""
    lines = [f"device: {report['device'].get('summary') or '-'}"]
    lines += [f"  {key}: {value}" for key, value in _flatten(report["device"]) if key != "summary"]
    if report["runtimes"] is None:
        lines.append("runtimes: not probed (the board was read from a captured tree)")
        return "\n".join(lines)
    lines.append("runtimes:")
    for runtime in report["runtimes"]:
        version = runtime_label(runtime["version"], (runtime.get("details") or {}).get("package")) \
            if runtime["version"] else "available"
        state = version if runtime["available"] else f"unavailable: {runtime['reason']}"
        lines.append(f"  {runtime['name']}: {state}")
    return "\n".join(lines)


def _flatten(data: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    items: List[Tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, name + ".")
        elif value not in (None, [], {}):
            items.append((name, ", ".join(map(str, value)) if isinstance(value, list) else value))
    return items
