"""Where edge-agent keeps what it measured or made once and reuses: per-device peaks, quantized models,
engines and `select` decisions; entries are written atomically and read back as None when damaged.

The folder is `$EDGE_AGENT_CACHE_DIR` when set, else `$XDG_CACHE_HOME/edge-agent`, else
`~/.cache/edge-agent`. It is created on first use. Every entry in it can be deleted at any time:
whatever is missing is measured again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

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


def cache_folder(kind: str) -> Path:
    """`<cache dir>/<kind>` (created): where quantized models, engines and decisions are kept."""
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader never sees half a file (temporary file, then rename)."""
    handle, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Store a JSON object in the cache, atomically."""
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    """A JSON object stored in the cache, or None when it is missing or damaged (then it is rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
