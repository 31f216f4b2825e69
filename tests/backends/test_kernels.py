"""Compute ceilings timed with the runtimes' own kernels (real ONNX Runtime and LiteRT, one call each),
and the re-check of ceilings a layer beat."""

from __future__ import annotations

from typing import List

import pytest
from support.peaks import fake_peaks

from agent.backends.kernels import RUNTIMES, onnx_kernels, runtime_peaks, tflite_kernels
from agent.backends.registry import get_backend
from agent.profile.ceilings import over_roof, recheck

AVAILABLE: List[str] = [name for name in RUNTIMES if get_backend(name).status().available]


@pytest.mark.skipif(not AVAILABLE, reason="neither onnxruntime nor a TFLite runtime is installed")
def test_every_available_runtime_has_an_fp32_and_an_int8_roof_from_a_gemm_and_a_conv() -> None:
    measured = runtime_peaks(threads=2, repeats=1)
    peaks = measured.peaks
    assert measured.unmeasured == {}
    assert sorted(p.label for p in peaks) == sorted(f"{r}/{p}" for r in AVAILABLE for p in ("fp32", "int8"))
    for peak in peaks:
        assert peak.version == get_backend(peak.runtime).status().version
        assert 0 < peak.gflops_single <= peak.gflops_all
        assert peak.gflops_single == max(peak.gemm_gflops_single, peak.conv_gflops_single)
        assert peak.gflops_all == max(peak.gemm_gflops_all, peak.conv_gflops_all)
    int8 = {p.runtime: p.kernels for p in peaks if p.precision == "int8"}
    assert "QLinearConv" in int8.get("onnxruntime", "QLinearConv") and "XNNPACK" in int8.get("tflite", "XNNPACK")


@pytest.mark.parametrize("builder", [onnx_kernels, tflite_kernels])
def test_kernel_models_count_two_flops_per_mac_and_grow_with_scale(builder) -> None:
    gemm, conv = builder("fp32", 1)
    assert gemm.flops == 2 * 512 ** 3 and conv.flops == 2 * 128 * 128 * 9 * 56 * 56
    assert [k.flops for k in builder("int8", 2)] == [8 * gemm.flops, 4 * conv.flops]


def test_only_the_ceilings_a_layer_beat_are_named_for_a_recheck() -> None:
    rows = [{"ceiling": "L1 bandwidth", "roof_fraction": 1.3}, {"ceiling": "tflite/int8 compute", "roof_fraction": 0.4},
            {"ceiling": None, "roof_fraction": None}]
    assert over_roof([{"layers": rows, "measured": {"whole_model": {"roof_fraction": 0.9}}}]) == {"L1 bandwidth"}
    whole = {"layers": rows[1:], "measured": {"whole_model": {"roof_fraction": 1.2}}}
    assert over_roof([whole]) == {"tflite/int8 compute"}  # the whole model: every ceiling its layers used
    assert over_roof([{"error": {"type": "ProfileError", "message": "x"}}]) == set()


def test_a_recheck_measures_the_named_level_again_and_never_lowers_it() -> None:
    peaks = fake_peaks()
    checked = recheck(peaks, {"L1 bandwidth"})
    assert checked.rechecked == ["L1 bandwidth"] and checked.compute == peaks.compute
    assert checked.memory[0].gbs_all >= peaks.memory[0].gbs_all and checked.memory[1:] == peaks.memory[1:]


@pytest.mark.skipif("tflite" not in AVAILABLE, reason="no TFLite runtime is installed")
def test_a_runtime_whose_kernels_fail_has_no_peak_and_says_why() -> None:
    measured = runtime_peaks(threads=1, repeats=1, scale=0, runtimes=["tflite"])  # a conv of 0 channels
    assert measured.peaks == [] and "input_channel > 0" in measured.unmeasured["tflite"]
