"""Where edge-agent keeps what it measured once and reuses: per-device peaks, and later engines.

The folder is `$EDGE_AGENT_CACHE_DIR` when set, else `$XDG_CACHE_HOME/edge-agent`, else
`~/.cache/edge-agent`. It is created on first use. Every entry in it can be deleted at any time:
whatever is missing is measured again.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.errors import AgentError

CACHE_ENV = "EDGE_AGENT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (created), or an `AgentError` naming the folder that cannot be made."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        folder = Path(chosen).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base).expanduser() / "edge-agent"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AgentError(f"cannot create the cache folder {folder}: {exc.strerror} (set {CACHE_ENV})") from exc
    return folder


def cache_file(name: str) -> Path:
    """The path of the cache entry `name` (a plain file name) inside `cache_dir()`."""
    return cache_dir() / name
