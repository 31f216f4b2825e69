"""The worker subprocess: results come back, and every way a worker can die becomes a clear error.

The crashes are real (a NULL read, abort(), a sleep past the limit) in a real worker process; the
worker makes them only when the test sets EDGE_AGENT_TEST_FAULTS=1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from agent.errors import InputSpecError, ModelFormatError, WorkerError
from agent.measure.isolate import run_worker
from agent.measure.worker import TEST_FAULTS_ENV


def _request(model: Path, fault: Optional[str] = None, **inputs: Any) -> Dict[str, Any]:
    return {
        "model": {"path": str(model), "format": model.suffix[1:]},
        "backend": "tflite" if model.suffix == ".tflite" else "onnxruntime",
        "threads": 1,
        "options": {"xnnpack": True} if model.suffix == ".tflite" else {
            "graph_optimization": "all", "inter_op_threads": 1, "execution_mode": "sequential",
            "provider": "CPUExecutionProvider"},
        "inputs": inputs,
        "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "iterations": 20, "min_seconds": 0.0},
        "outputs": None,
        "fault": fault,
    }


def test_a_measurement_comes_back_with_progress(digits: Path) -> None:
    events: List[Dict[str, Any]] = []
    result = run_worker(_request(digits / "model.fp32.onnx"), 60, events.append)
    assert [e["phase"] for e in events] == ["load", "warmup", "measure"]
    assert result["latency"]["iterations"] >= 20 and result["latency"]["p50_ms"] > 0
    assert result["memory"]["peak_rss_mb"] > result["memory"]["baseline_rss_mb"] > 0


@pytest.mark.parametrize("fault, expected", [
    ("segfault", "worker crashed with signal SIGSEGV"),
    ("abort", "worker crashed with signal SIGABRT"),
    ("exit", "worker exited with code 3 without a result"),
])
def test_a_dying_worker_is_a_worker_error(monkeypatch: pytest.MonkeyPatch, digits: Path, fault: str,
                                          expected: str) -> None:
    monkeypatch.setenv(TEST_FAULTS_ENV, "1")
    with pytest.raises(WorkerError, match=expected):
        run_worker(_request(digits / "model.fp32.tflite", fault), 60)


def test_a_hanging_worker_is_killed_at_its_limit(monkeypatch: pytest.MonkeyPatch, digits: Path) -> None:
    monkeypatch.setenv(TEST_FAULTS_ENV, "1")
    start = time.monotonic()
    with pytest.raises(WorkerError, match="timed out after 3 s and was killed"):
        run_worker(_request(digits / "model.fp32.onnx", "hang"), 3)
    assert time.monotonic() - start < 10


def test_faults_are_ignored_without_the_test_switch(monkeypatch: pytest.MonkeyPatch, digits: Path) -> None:
    monkeypatch.delenv(TEST_FAULTS_ENV, raising=False)
    assert run_worker(_request(digits / "model.fp32.tflite", "segfault"), 60)["latency"]["iterations"] >= 20


def test_errors_the_worker_reports_keep_their_type(tmp_path: Path, digits: Path) -> None:
    with pytest.raises(InputSpecError, match="--shape names no input of this model: nope"):
        run_worker(_request(digits / "model.fp32.onnx", shapes={"nope": [1]}), 60)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((digits / "model.fp32.onnx").read_bytes()[:500])
    with pytest.raises(ModelFormatError, match="ONNX Runtime cannot load broken.onnx"):
        run_worker(_request(broken), 60)
