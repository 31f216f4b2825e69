"""Amdahl's law fitted to latencies at several thread counts, speed-up and efficiency, thread counts."""

from __future__ import annotations

import pytest

from agent.profile.scaling import amdahl_fit, scaling_section, thread_counts


@pytest.mark.parametrize("serial", [0.0, 0.1, 0.5, 1.0])
def test_the_fit_recovers_the_serial_fraction_of_exact_amdahl_latencies(serial: float) -> None:
    threads = [1, 2, 3, 4, 8]
    latency = [10.0 * (serial + (1 - serial) / n) for n in threads]
    fit = amdahl_fit(threads, latency)
    assert fit is not None
    assert fit["serial_fraction"] == pytest.approx(serial, abs=1e-4)
    assert fit["t1_ms"] == pytest.approx(10.0, abs=1e-4)
    assert fit["rms_residual_ms"] == pytest.approx(0.0, abs=1e-6)
    assert fit["max_speedup"] == (None if serial == 0 else pytest.approx(1 / serial, rel=1e-3))


def test_noisy_latencies_are_fitted_by_least_squares() -> None:
    """T(n) = 2 + 8/n with +-0.1 ms of noise: the fit lands near s = 0.2, with a residual."""
    threads = [1, 2, 4, 8]
    noise = [0.1, -0.1, 0.1, -0.1]
    fit = amdahl_fit(threads, [2 + 8 / n + e for n, e in zip(threads, noise)])
    assert fit is not None and fit["serial_fraction"] == pytest.approx(0.2, abs=0.02)
    assert 0 < fit["rms_residual_ms"] < 0.1


def test_latency_that_grows_with_threads_is_all_serial_and_superlinear_is_none() -> None:
    slower = amdahl_fit([1, 2], [1.0, 1.2])
    assert slower is not None and slower["serial_fraction"] == 1.0 and slower["max_speedup"] == 1.0
    faster = amdahl_fit([1, 2, 4], [8.0, 3.0, 1.5])  # better than linear: constrained to no serial part
    assert faster is not None and faster["serial_fraction"] == 0.0 and faster["max_speedup"] is None


def test_one_thread_count_cannot_be_fitted() -> None:
    assert amdahl_fit([1], [5.0]) is None
    assert amdahl_fit([1, 1], [5.0, 5.1]) is None


def test_speedup_and_efficiency_are_relative_to_one_thread() -> None:
    section = scaling_section([1, 2, 4], [8.0, 5.0, None])
    assert section["speedup"] == [1.0, 1.6, None]
    assert section["efficiency"] == [1.0, 0.8, None]
    assert section["amdahl"]["points"] == 2


def test_thread_counts_cover_small_boards_fully_and_large_ones_by_powers_of_two() -> None:
    assert thread_counts(1) == [1]
    assert thread_counts(4) == [1, 2, 3, 4]
    assert thread_counts(12) == [1, 2, 4, 8, 12]
    assert thread_counts(16) == [1, 2, 4, 8, 16]
