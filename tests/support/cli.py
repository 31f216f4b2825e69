"""Helpers for tests: the CLI run as a real subprocess, and manifest edits on bundle copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent.parent

def edit_manifest(bundle: Path, edit: Any) -> None:
    """Apply `edit(manifest_dict)` to a bundle's manifest.json in place."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


class CliResult:
    """What a CLI run printed and returned."""

    def __init__(self, completed: subprocess.CompletedProcess) -> None:
        self.code = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 240) -> CliResult:
    """Run `python -m agent.cli ARGS` as a real process, from the repository root."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    completed = subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=full_env,
                               capture_output=True, text=True, timeout=timeout)
    return CliResult(completed)


# A short latency run: enough to exercise every phase, quick enough for the unit suite.
QUICK: List[str] = ["--warmup", "2", "--iterations", "5", "--min-seconds", "0"]
