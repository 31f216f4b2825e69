"""The TFLite reader without ai-edge-litert (Python 3.8, JetPack 5): the `tflite` package's schema read
through `agent.graph.tflite_schema` gives the same profile as ai-edge-litert's object API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from support.corpus import MODELS, fetch

from agent.errors import ProfileError
from agent.graph.read import read_graph
from agent.profile.static import static_profile

ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLED = [ROOT / "models" / bundle / name for bundle in ("digits", "mobilenet_v2")
           for name in ("model.fp32.tflite", "model.int8.tflite")]


def _without_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    """A None entry in sys.modules makes the import fail as on a board without the package."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)


def _profile(path: Path) -> Dict[str, Any]:
    return static_profile(path).to_dict()


@pytest.mark.parametrize("path", BUNDLED + [m.path for m in MODELS if m.path.suffix == ".tflite"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_tflite_package_reads_what_ai_edge_litert_reads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite")
    model = next((m for m in MODELS if m.path == path), None)
    if model is not None and fetch(model) is not None:
        pytest.skip(f"corpus model {model.name} not fetched")
    expected = _profile(path)
    _without_litert(monkeypatch)
    assert _profile(path) == expected


def test_the_bundled_models_profile_with_whichever_schema_this_python_has() -> None:
    """Runs under Python 3.8 too (scripts/test), where only the tflite package can be installed."""
    totals = static_profile(ROOT / "models" / "mobilenet_v2" / "model.int8.tflite").totals()
    assert totals["macs"] == 300_774_272 and totals["layers_not_counted"] == 0


def test_without_either_schema_the_reader_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_litert(monkeypatch)
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(ProfileError, match="ai-edge-litert.*tflite"):
        read_graph(BUNDLED[0])
