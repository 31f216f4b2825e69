"""`edge-agent select`: the rules in isolation, then real races on the bundled models (real workers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.cli import QUICK, edit_manifest, run_cli

from agent.errors import UsageError
from agent.selection.candidates import thread_counts
from agent.selection.decision import (
    STATUSES,
    Candidate,
    Decision,
    decision_key,
    decision_path,
    load_decision,
    store_decision,
)
from agent.selection.race import judge, objective_value
from agent.selection.request import SelectRequest

CANDIDATE_KEYS = {"backend", "precision", "threads", "p50_ms", "top1", "fidelity", "status", "reason"}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache folder (the CLI subprocesses inherit the variable)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGE_AGENT_CACHE_DIR", str(folder))
    return folder


@pytest.mark.parametrize("cores, counts", [(1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]),
                                           (12, [1, 2, 4, 8, 12])])
def test_thread_counts(cores: int, counts: list) -> None:
    assert thread_counts(cores) == counts


def _candidate(**fields: object) -> Candidate:
    return Candidate(**dict(dict(backend="onnxruntime", precision="int8", threads=2), **fields))  # type: ignore


def test_accuracy_budget_in_points() -> None:
    request = SelectRequest("m", budget=1.0)
    assert judge(_candidate(top1=0.981), 0, 0.989, request) is None  # 0.8 points: within
    assert judge(_candidate(top1=0.975), 0, 0.989, request) == \
        "Top-1 97.5% is 1.4 points below the FP32 reference's 98.9% (budget 1)"
    assert judge(_candidate(top1=0.975), 0, 0.989, SelectRequest("m", budget=2.0)) is None
    assert judge(_candidate(top1=0.99), 3, 0.989, request) == "produced NaN/Inf on 3 samples"


def test_fidelity_thresholds_for_unlabelled_models() -> None:
    request = SelectRequest("m", min_cosine=0.99)
    close = {"cosine": 0.999, "top1_agreement": 1.0, "samples": 8}
    assert judge(_candidate(fidelity=close), 0, None, request) is None
    assert judge(_candidate(fidelity=dict(close, cosine=0.95)), 0, None, request) == \
        "output cosine 0.9500 to the FP32 reference is under 0.99"
    assert judge(_candidate(fidelity=dict(close, top1_agreement=0.875)), 0, None, request) == \
        "top-1 agreement 87.5% with the FP32 reference is under 99.0%"
    assert judge(_candidate(fidelity=dict(close, top1_agreement=0.875)), 0, None,
                 SelectRequest("m", min_agreement=0.8)) is None
    assert judge(_candidate(fidelity={"error": "the FP32 reference run failed"}), 0, None, request) == \
        "fidelity could not be judged: the FP32 reference run failed"


def test_objectives() -> None:
    fast, wide = _candidate(p50_ms=2.0, p99_ms=9.0, throughput_per_s=400.0), _candidate(p50_ms=3.0, p99_ms=4.0,
                                                                                       throughput_per_s=300.0)
    assert objective_value(fast, "p50") < objective_value(wide, "p50")
    assert objective_value(wide, "p99") < objective_value(fast, "p99")
    assert objective_value(fast, "throughput") < objective_value(wide, "throughput")  # higher is better
    assert objective_value(_candidate(), "p50") == float("inf")  # not measured: last
    with pytest.raises(UsageError, match="objective energy is not available: this board reports no power"):
        objective_value(fast, "energy")


def test_a_decision_is_reused_only_for_the_same_device_model_and_runtimes(tmp_path: Path) -> None:
    key = decision_key("f" * 16, {"onnx/fp32": "a" * 64}, {"onnxruntime": "1.32.0", "tflite": "2.3.0"})
    path = decision_path("digits", key, tmp_path)
    chosen = _candidate(status="chosen", reason="fastest admissible", p50_ms=1.0)
    store_decision(path, Decision(key, SelectRequest("m").settings(), [chosen, _candidate(status="lost")]))
    loaded = load_decision(path, key)
    assert loaded is not None and loaded.reused and loaded.choice == chosen
    for changed in (decision_key("e" * 16, {"onnx/fp32": "a" * 64}, {"onnxruntime": "1.32.0", "tflite": "2.3.0"}),
                    decision_key("f" * 16, {"onnx/fp32": "b" * 64}, {"onnxruntime": "1.32.0", "tflite": "2.3.0"}),
                    decision_key("f" * 16, {"onnx/fp32": "a" * 64}, {"onnxruntime": "1.33.0", "tflite": "2.3.0"})):
        assert decision_path("digits", changed, tmp_path) != path
        assert load_decision(path, changed) is None


def _select(*args: str) -> dict:
    result = run_cli("select", *args, "--json")
    assert result.code == 0, result.stderr
    return result.json()


def test_select_digits_chooses_an_admissible_configuration_and_stores_it(digits: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    report = _select(str(digits), "--threads", "1", "--time-limit", "60")
    assert time.monotonic() - started < 60
    selection = report["selection"]
    candidates = selection["candidates"]
    assert {(c["backend"], c["precision"]) for c in candidates} == {
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    for candidate in candidates:
        assert set(candidate) >= CANDIDATE_KEYS and candidate["status"] in STATUSES and candidate["reason"]
        assert candidate["p50_ms"] > 0 and candidate["top1"] >= 0.95
    choice = selection["choice"]
    assert [c for c in candidates if c["status"] == "chosen"] == [choice]
    fastest = min(c["p50_ms"] for c in candidates if c["rounds"] == choice["rounds"])
    assert choice["p50_ms"] == fastest and selection["reference"]["label"].startswith("onnxruntime/fp32")
    int8 = next(c for c in candidates if c["backend"] == "onnxruntime" and c["precision"] == "int8")
    assert int8["derived"] and int8["build"]["method"] == "minmax"
    output = tmp_path / "selection.json"
    table = run_cli("select", str(digits), "--threads", "1", "--output", str(output))  # the stored decision
    assert table.code == 0, table.stderr
    again = json.loads(output.read_text())["selection"]
    assert again["reused"] and again["choice"] == choice
    lines = table.stdout.splitlines()
    assert lines[1].split()[:4] == ["status", "backend", "prec", "thr"] and lines[2].split()[0] == "chosen"
    assert len([line for line in lines if line.split()[0] in STATUSES]) == len(candidates)
    expected = f"choice: {choice['backend']}/{choice['precision']} (1 thr" + (
        f", {', '.join(f'{k}={v}' for k, v in sorted(choice['options'].items()))})" if choice["options"] else ")")
    # The choice line ends the table; a note on an unstable race (a busy machine) may follow it.
    assert [line for line in lines if line.startswith("choice: ")] == [expected]
    assert all(line.startswith("note: ") for line in lines[lines.index(expected) + 1:]), lines
    bench = run_cli("bench", str(digits), "--backend", "auto", "--json", *QUICK)
    assert bench.code == 0, bench.stderr
    (run,) = bench.json()
    assert (run["backend"]["name"], run["model"]["precision"]) == (choice["backend"], choice["precision"])


def test_unlabelled_int8_is_judged_by_fidelity(mobilenet: Path) -> None:
    """MobileNetV2 has random weights and unlabelled data: INT8 drifts from FP32 and is rejected."""
    selection = _select(str(mobilenet), "--backend", "tflite", "--threads", "2")["selection"]
    by_precision = {c["precision"]: c for c in selection["candidates"]}
    assert by_precision["int8"]["status"] == "rejected" and by_precision["int8"]["top1"] is None
    reason = by_precision["int8"]["reason"]
    assert reason.startswith("output cosine 0.9") and reason.endswith("to the FP32 reference is under 0.99")
    assert by_precision["fp32"]["status"] == "chosen" and selection["choice"]["precision"] == "fp32"
    loose = _select(str(mobilenet), "--backend", "tflite", "--threads", "2", "--min-cosine", "0.5",
                    "--min-agreement", "0")["selection"]
    assert not loose["reused"]  # other settings: measured again
    assert {c["precision"]: c["status"] for c in loose["candidates"]}["int8"] in ("chosen", "lost")


def test_without_calibration_data_int8_is_skipped_with_the_reason(digits_copy: Path) -> None:
    edit_manifest(digits_copy, lambda m: m["data"].pop("calibration"))
    selection = _select(str(digits_copy), "--backend", "onnxruntime", "--threads", "1")["selection"]
    int8 = next(c for c in selection["candidates"] if c["precision"] == "int8")
    assert int8["status"] == "rejected" and int8["p50_ms"] is None
    assert int8["reason"] == "INT8 skipped: the bundle has no calibration data (data.calibration in manifest.json)"
    assert selection["choice"]["precision"] == "fp32"


def test_the_time_limit_is_kept(digits: Path) -> None:
    started = time.monotonic()
    selection = _select(str(digits), "--time-limit", "2")["selection"]
    # a run is started only when its expected cost fits; the CLI's own start and teardown come on top
    assert time.monotonic() - started < 2 + 4
    unmeasured = [c for c in selection["candidates"] if c["reason"].startswith("not measured")]
    assert unmeasured and all(c["status"] == "lost" for c in unmeasured)


def test_backend_auto_selects_first_when_nothing_is_stored(digits: Path, cache: Path) -> None:
    result = run_cli("eval", str(digits), "--backend", "auto", "--eval-limit", "50", "--json")
    assert result.code == 0, result.stderr
    (stored,) = (cache / "select").glob("digits-*.json")
    choice = json.loads(stored.read_text())["choice"]
    (report,) = result.json()
    assert (report["backend"]["name"], report["model"]["precision"]) == (choice["backend"], choice["precision"])
    assert report["accuracy"]["samples"] == 50
    mixed = run_cli("bench", str(digits), "--backend", "auto,tflite")
    assert mixed.code == 2 and "--backend auto runs the chosen configuration alone" in mixed.stderr
