"""Winograd and FFT eligibility of convolutions, with the multiplications each would save."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.profile.fast_algorithms import fast_algorithms

CONV = {"kernel": [3, 3], "strides": [1, 1], "dilations": [1, 1], "group": 1, "in_channels": 64,
        "layout": "NCHW", "pads": [1, 1, 1, 1]}


def _direct(out: int, channels_out: int, channels_in: int, k: int) -> int:
    return out * out * channels_out * channels_in * k * k


def test_a_3x3_stride_1_conv_gets_both_winograd_tiles() -> None:
    direct = _direct(56, 64, 64, 3)
    found = {f["name"]: f for f in fast_algorithms(CONV, (1, 64, 56, 56), (1, 64, 56, 56), direct)}
    # F(2x2,3x3): 16 multiplications per 4 outputs instead of 36; F(4x4,3x3): 36 per 16 instead of 144.
    assert found["winograd F(2x2,3x3)"]["mults"] == 64 * 64 * 28 * 28 * 16
    assert found["winograd F(4x4,3x3)"]["mults"] == 64 * 64 * 14 * 14 * 36
    assert found["winograd F(4x4,3x3)"]["saved_mults"] == direct - direct // 4
    ragged = fast_algorithms(CONV, (1, 64, 7, 7), (1, 64, 7, 7), _direct(7, 64, 64, 3))
    assert [f["mults"] for f in ragged] == [64 * 64 * 16 * 16, 64 * 64 * 4 * 36]  # edge tiles are padded


@pytest.mark.parametrize("change", [{"strides": [2, 2]}, {"dilations": [2, 2]}, {"group": 64},
                                    {"kernel": [1, 1]}, {"kernel": [3, 1]}])
def test_strided_dilated_depthwise_pointwise_and_asymmetric_convs_are_not_eligible(change: dict) -> None:
    assert fast_algorithms(dict(CONV, **change), (1, 64, 56, 56), (1, 64, 56, 56), _direct(56, 64, 64, 3)) == []


def test_5x5_is_winograd_f2_and_7x7_is_fft() -> None:
    five = fast_algorithms(dict(CONV, kernel=[5, 5], pads=[2] * 4), (1, 64, 32, 32), (1, 64, 32, 32),
                           _direct(32, 64, 64, 5))
    assert [(f["name"], f["mults"]) for f in five] == [("winograd F(2x2,5x5)", 64 * 64 * 16 * 16 * 36)]
    seven = fast_algorithms(dict(CONV, kernel=[7, 7], pads=[3] * 4), (1, 64, 58, 58), (1, 64, 58, 58),
                            _direct(58, 64, 64, 7))
    (fft,) = seven
    # 58 + 6 padded = 64 points a side: 64·33 complex products per channel pair, 128 maps transformed.
    assert fft["name"] == "fft 64x64" and fft["mults"] == 64 * 64 * 64 * 33 * 4 + 128 * 64 * 64 * 12


def test_the_profile_lists_them_per_layer_and_totals_the_best(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np

    from agent.profile.static import static_profile

    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = onnx.helper.make_graph([node], "conv", [onnx.helper.make_tensor_value_info("x", 1, [1, 8, 16, 16])],
                                   [onnx.helper.make_tensor_value_info("y", 1, None)],
                                   [onnx.numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    profile = static_profile(path)
    (conv,) = [c for c in profile.layers if c.kind == "conv"]
    best = max(f["saved_mults"] for f in conv.fast_algorithms)  # type: ignore[type-var]
    assert conv.to_dict()["fast_algorithms"] and profile.totals()["fast_algorithm_saved_mults"] == best
