"""The worker subprocess: results come back, and every way a worker can die becomes a clear error.

The crashes are real (a NULL read, abort(), a sleep past the limit) in a real worker process; the
worker makes them only through the test suite's hook (tests/support/faults.py), named in its environment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from support.faults import fault_env

from agent.bundle import open_model
from agent.errors import InputSpecError, ModelFormatError, WorkerError
from agent.measure.latency import LoopPlan, Warmup
from agent.measure.messages import FeedSpec, ModelRef, TraceSettings, WorkerRequest, WorkerResult
from agent.measure.plan import MeasureRequest, plan
from agent.measure.run import build_request, run_worker
from agent.measure.worker import WORKER_HOOK_ENV


def _request(model: Path, **feed: Any) -> WorkerRequest:
    return WorkerRequest(
        model=ModelRef(str(model), model.suffix[1:]),
        backend="tflite" if model.suffix == ".tflite" else "onnxruntime",
        threads=1,
        options={"xnnpack": True} if model.suffix == ".tflite" else {
            "graph_optimization": "all", "inter_op_threads": 1, "execution_mode": "sequential",
            "provider": "CPUExecutionProvider"},
        feed=FeedSpec(**feed),
        latency=LoopPlan(Warmup(2, 0.0), 20, 0.0),
    )


def _inject(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    for name, value in fault_env(fault).items():
        monkeypatch.setenv(name, value)


def test_a_request_with_every_part_survives_the_pipe(tmp_path: Path, digits: Path) -> None:
    bundle = open_model(digits)
    measure = MeasureRequest(str(digits), derive=True, trace=TraceSettings(5, 1), shapes={"image": [1, 8, 8, 1]},
                             eval_limit=20, memory_limit_mb=4096)
    [config] = [c for c in plan(bundle, measure) if c.derived == "int8"]
    request = build_request(bundle, config, measure, tmp_path / "out.npy", with_latency=True)
    assert request.calibration is not None and request.feed.preprocessing == bundle.preprocessing
    assert request.latency and request.outputs and request.trace and request.feed.data
    assert WorkerRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_a_result_survives_the_pipe(digits: Path) -> None:
    result = run_worker(_request(digits / "model.fp32.onnx"), 60)
    assert WorkerResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_a_measurement_comes_back_with_progress(digits: Path) -> None:
    events: List[Dict[str, Any]] = []
    result = run_worker(_request(digits / "model.fp32.onnx"), 60, events.append)
    assert [e["phase"] for e in events] == ["load", "warmup", "measure"]
    assert result.timing is not None
    assert result.timing.latency["iterations"] >= 20 and result.timing.latency["p50_ms"] > 0
    assert result.memory.peak_rss_mb > result.memory.baseline_rss_mb > 0  # type: ignore[operator]


@pytest.mark.parametrize("fault, expected, code", [
    ("segfault", "worker crashed with signal SIGSEGV", "worker_crashed"),
    ("abort", "worker crashed with signal SIGABRT", "worker_crashed"),
    ("exit", "worker exited with code 3 without a result", "worker_failed"),
])
def test_a_dying_worker_is_a_worker_error(monkeypatch: pytest.MonkeyPatch, digits: Path, fault: str,
                                          expected: str, code: str) -> None:
    _inject(monkeypatch, fault)
    with pytest.raises(WorkerError, match=expected) as caught:
        run_worker(_request(digits / "model.fp32.tflite"), 60)
    assert caught.value.code == code


def test_a_hanging_worker_is_killed_at_its_limit(monkeypatch: pytest.MonkeyPatch, digits: Path) -> None:
    _inject(monkeypatch, "hang")
    start = time.monotonic()
    with pytest.raises(WorkerError, match="timed out after 3 s and was killed") as caught:
        run_worker(_request(digits / "model.fp32.onnx"), 3)
    assert caught.value.code == "worker_failed"  # we killed it: not a crash
    assert time.monotonic() - start < 10


def test_faults_are_ignored_without_the_hook(monkeypatch: pytest.MonkeyPatch, digits: Path) -> None:
    _inject(monkeypatch, "segfault")
    monkeypatch.delenv(WORKER_HOOK_ENV)
    result = run_worker(_request(digits / "model.fp32.tflite"), 60)
    assert result.timing is not None and result.timing.latency["iterations"] >= 20


def test_errors_the_worker_reports_keep_their_type(tmp_path: Path, digits: Path) -> None:
    with pytest.raises(InputSpecError, match="--shape names no input of this model: nope"):
        run_worker(_request(digits / "model.fp32.onnx", shapes={"nope": [1]}), 60)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((digits / "model.fp32.onnx").read_bytes()[:500])
    with pytest.raises(ModelFormatError, match="ONNX Runtime cannot load broken.onnx"):
        run_worker(_request(broken), 60)


def _children(pid: int) -> List[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("watcher", ["prctl", "thread"])
def test_a_worker_dies_with_its_parent(digits: Path, watcher: str) -> None:
    """The parent is SIGKILLed while its worker hangs: the kernel (PR_SET_PDEATHSIG), or the fallback
    thread that watches the parent id, ends the worker within a second or so; nothing runs on."""
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, **fault_env("hang"))
    if watcher == "thread":
        env["EDGE_AGENT_NO_PDEATHSIG"] = "1"
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'tests'); "
            "from measure.test_isolate import _request; from agent.measure.run import run_worker; "
            f"run_worker(_request(Path({str(digits / 'model.fp32.onnx')!r})), 600)")
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while not _children(parent.pid):
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.05)
        [worker] = _children(parent.pid)
        time.sleep(2.0)  # past the load: the worker hangs in the hook
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 3
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), f"worker {worker} outlived its parent"
    finally:
        parent.kill()
        parent.wait()
