"""The model store as the daemon sees it: what it holds (`models`), where a command's model name leads
(never outside the store, links included), and the work folders an interrupted deploy left behind.
Standard library only: the daemon imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

from agent.errors import ModelNotFoundError, ProtocolError

MODEL_EXTENSIONS = (".onnx", ".tflite")
MAX_DEPTH = 4  # a model name has at most four segments (agent.mqtt.schema)
WORK_PREFIX = ".deploy-"  # a deploy's work folder inside the store (agent.service.deploy)


def resolve_model(model_dir: Path, name: str) -> Path:
    """The file or bundle folder `name` names in the store; never a path outside it (symlinks
    included), which fails as `bad_model_name`."""
    root = model_dir.resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ProtocolError("bad_model_name", f"model {name!r} leads outside the model store")
    if not path.exists():
        raise ModelNotFoundError(f"no model {name!r} in the model store {model_dir}")
    return path


def list_models(model_dir: Path) -> List[Dict[str, Any]]:
    """Bundles (folders with manifest.json, read without hashing) and plain model files in the store; a
    link that leads out of the store is not followed (nor listed)."""
    found: List[Dict[str, Any]] = []
    if not model_dir.is_dir():
        return found
    root = model_dir.resolve()
    for folder, subfolders, files in os.walk(model_dir):
        files = [name for name in files if _inside(root, Path(folder) / name)]
        relative = Path(folder).relative_to(model_dir)
        depth = len(relative.parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < MAX_DEPTH - 1 else []
        if "manifest.json" in files and depth > 0:
            found.append(_bundle_entry(relative.as_posix(), Path(folder) / "manifest.json"))
            subfolders[:] = []
            continue
        for name in sorted(f for f in files if f.endswith(MODEL_EXTENSIONS) and not f.startswith(".")):
            path = Path(folder) / name
            found.append({"name": (relative / name).as_posix(), "format": path.suffix[1:],
                          "bytes": path.stat().st_size})
    return found


def _bundle_entry(name: str, manifest: Path) -> Dict[str, Any]:
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
        models = [{"path": m.get("path"), "format": m.get("format"), "precision": m.get("precision")}
                  for m in document.get("models", [])]
        return {"name": name, "bundle": document.get("name"), "task": document.get("task"), "models": models}
    except (OSError, ValueError, AttributeError) as error:
        return {"name": name, "error": f"unreadable manifest.json: {error}"}


def _inside(root: Path, path: Path) -> bool:
    return root in path.resolve().parents


def remove_leftovers(model_dir: Path) -> None:
    """Delete work folders of deploys that a crash interrupted."""
    if model_dir.is_dir():
        for entry in model_dir.iterdir():
            if entry.name.startswith(WORK_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


