"""The pure parts of measuring: warm-up parsing, the timed loop's stopping rule, statistics,
Top-k, fidelity and input resolution, each against hand-computed values."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from agent.backends.base import TensorInfo
from agent.errors import InputSpecError, UsageError
from agent.measure import accuracy, latency
from agent.measure.inputs import generate, parse_input_arg, parse_shape_arg, resolve_shapes


@pytest.mark.parametrize("text, count, seconds", [("10", 10, 0.0), ("2s", 0, 2.0), ("5,0.5s", 5, 0.5)])
def test_warmup_parses_counts_and_seconds(text: str, count: int, seconds: float) -> None:
    assert latency.Warmup.parse(text) == latency.Warmup(count, seconds)


def test_warmup_rejects_nonsense() -> None:
    with pytest.raises(UsageError, match="--warmup takes"):
        latency.Warmup.parse("ten")


def test_loop_lasts_at_least_the_iterations_and_the_seconds() -> None:
    calls = []
    times = latency.measure(lambda: calls.append(1), iterations=50, min_seconds=0.0)
    assert len(times) == 50 == len(calls)
    start = time.perf_counter()
    times = latency.measure(lambda: None, iterations=1, min_seconds=0.2)
    assert time.perf_counter() - start >= 0.2 and len(times) > 1
    assert latency.warm_up(lambda: None, latency.Warmup(7, 0.0)) == 7


def test_summary_statistics_match_a_hand_count() -> None:
    summary = latency.summarize([1_000_000 * v for v in range(1, 101)], batch=4)  # 1..100 ms
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["min_ms"] == 1.0 and summary["max_ms"] == 100.0 and summary["iterations"] == 100
    assert summary["mean_ms"] == pytest.approx(50.5)
    assert summary["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1), rel=1e-6)
    assert summary["p99_9_ms"] == pytest.approx(99.901)
    assert summary["cov"] == pytest.approx(np.std(np.arange(1, 101), ddof=1) / 50.5, rel=1e-5)
    assert summary["throughput_per_s"] == pytest.approx(4 * 1000 / 50.5, rel=1e-6)


def test_rounds_share_the_loop_budget_and_keep_each_call_in_order() -> None:
    rounds = latency.measure_rounds(lambda: None, iterations=10, min_seconds=0.0, rounds=3)
    assert [len(r.ends_ns) for r in rounds] == [4, 4, 4]  # 10 / 3 rounded up, per round
    stamps = [t for r in rounds for pair in zip(r.starts_ns, r.ends_ns) for t in pair]
    assert stamps == sorted(stamps) and all(d >= 0 for r in rounds for d in r.durations_ns)
    start = time.perf_counter()
    timed = latency.measure_rounds(lambda: None, iterations=1, min_seconds=0.3, rounds=3)
    assert time.perf_counter() - start >= 0.3 and all(len(r.ends_ns) > 1 for r in timed)


def test_topk_counts_nonfinite_rows_as_misses() -> None:
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [np.nan, 5.0, 0.0], [0.2, 0.3, 0.5]])
    result = accuracy.topk_accuracy(scores, np.array([1, 0, 1, 0]))
    assert result["top1"] == 0.5 and result["nonfinite_samples"] == 1
    assert result["top5"] == 0.75  # three classes: top-5 is top-3, and the NaN row still misses


def test_fidelity_of_identical_and_perturbed_outputs() -> None:
    reference = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    same = accuracy.fidelity(reference, reference.copy())
    assert same["top1_agreement"] == 1.0 and same["cosine"] == pytest.approx(1.0)
    assert same["max_abs_error"] == 0.0 and same["snr_db"] is None
    noisy = reference + np.array([[0.0, 0.0, -2.5], [0.1, 0.0, 0.0]])
    result = accuracy.fidelity(reference, noisy)
    assert result["top1_agreement"] == 0.5 and result["max_abs_error"] == pytest.approx(2.5)
    signal, noise = (reference ** 2).sum(), 2.5 ** 2 + 0.1 ** 2
    assert result["snr_db"] == pytest.approx(10 * math.log10(signal / noise))


def test_fidelity_reports_nan_rows_instead_of_averaging_them() -> None:
    reference = np.ones((3, 4))
    candidate = reference.copy()
    candidate[1, 2] = np.inf
    result = accuracy.fidelity(reference, candidate)
    assert result["nonfinite_samples"] == 1 and result["cosine"] == pytest.approx(1.0)
    assert accuracy.fidelity(reference, np.full((3, 4), np.nan))["cosine"] is None
    assert "output shapes differ" in accuracy.fidelity(reference, np.ones((3, 5)))["error"]


def test_shapes_resolve_batch_and_name_what_is_missing() -> None:
    image = TensorInfo("pixel_values", ("batch", 3, None, None), "float32")
    with pytest.raises(InputSpecError, match=r"'pixel_values' dimension 2 \(dynamic\).*--shape pixel_values=N,3,N,N"):
        resolve_shapes([image], 1, {})
    assert resolve_shapes([image], 2, {"pixel_values": [2, 3, 64, 64]}) == [(2, 3, 64, 64)]
    with pytest.raises(InputSpecError, match="dimension 1 is fixed to 3 by the model, 4 was given"):
        resolve_shapes([image], 1, {"pixel_values": [1, 4, 64, 64]})
    tokens = TensorInfo("input_ids", ("batch", "sequence"), "int64")
    with pytest.raises(InputSpecError, match="'input_ids' dimension 1 \\('sequence'\\)"):
        resolve_shapes([tokens], 1, {})
    assert resolve_shapes([TensorInfo("x", (None, 10), "float32")], 8, {}) == [(8, 10)]


def test_generated_inputs_are_seeded_and_typed() -> None:
    info = TensorInfo("x", (2, 3), "float32")
    assert np.array_equal(generate(info, (2, 3), 0), generate(info, (2, 3), 0))
    assert not np.array_equal(generate(info, (2, 3), 0), generate(info, (2, 3), 1))
    ids = generate(TensorInfo("ids", (4,), "int64"), (4,), 0)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 10


def test_argument_parsers_name_the_problem(tmp_path) -> None:
    assert parse_shape_arg("x:0=1,3,224,224") == ("x:0", [1, 3, 224, 224])
    with pytest.raises(UsageError, match="--shape takes NAME=D1,D2"):
        parse_shape_arg("x=1,a")
    with pytest.raises(UsageError, match="file not found"):
        parse_input_arg(f"x={tmp_path / 'missing.npy'}")
