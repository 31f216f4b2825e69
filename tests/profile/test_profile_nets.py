"""Exact published counts on ResNet-50 v1.5 and MobileNetV2 1.0 built with onnx.helper (tests/nets.py)."""

from __future__ import annotations

import json

import onnx
import pytest
from support.nets import mobilenet_v2, resnet50_v15

from agent.profile.static import Profile, static_profile


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    path = tmp_path_factory.mktemp("resnet50") / "resnet50.onnx"
    onnx.save(resnet50_v15(), str(path))  # ~100 MB of float32 weights
    return static_profile(path)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2.onnx"
    onnx.save(mobilenet_v2(), str(path))
    return static_profile(path)


def conv_gemm_macs(profile: Profile) -> int:
    return sum(c.macs or 0 for c in profile.layers if c.op in ("Conv", "Gemm"))


def test_resnet50_counts(resnet50: Profile) -> None:
    totals = resnet50.totals()
    assert conv_gemm_macs(resnet50) == 4_089_184_256
    assert totals["macs"] == 4_089_184_256  # nothing else in the net multiply-accumulates
    assert totals["params"] == 25_557_032 and totals["param_bytes"] == 4 * 25_557_032
    assert totals["buffers"] == 53_120  # BatchNorm running mean and variance, apart
    assert totals["unknown_ops"] == 0 and resnet50.not_counted() == []


def test_mobilenet_v2_counts(mobilenet: Profile) -> None:
    totals = mobilenet.totals()
    assert conv_gemm_macs(mobilenet) == 300_774_272
    assert totals["params"] == 3_504_872
    assert totals["buffers"] == 34_112
    assert mobilenet.layers[2].op == "Clip" and mobilenet.layers[2].params == 0  # ReLU6 bounds: operands


def test_resnet50_peak_activation(resnet50: Profile) -> None:
    """At the first block's last BatchNorm, three 256x56x56 float tensors are live: the projected
    shortcut, the 1x1 conv output and the BatchNorm output."""
    assert resnet50.memory.peak_bytes == 3 * 256 * 56 * 56 * 4
    assert len(resnet50.memory.live_tensors) == 3


def test_structure_of_both_nets(resnet50: Profile, mobilenet: Profile) -> None:
    assert resnet50.parallelism.width == 2  # the projection shortcut beside the bottleneck
    assert mobilenet.parallelism.width == 1  # identity shortcuts are no layers
    assert resnet50.parallelism.critical_path_flops < resnet50.parallelism.total_flops
    assert len(resnet50.fusion.vertical) == 53 and len(mobilenet.fusion.vertical) == 52  # every conv
    assert resnet50.fusion.horizontal == [] and resnet50.fusion.dead_outputs == []


def test_profile_dict_is_json_with_the_documented_fields(mobilenet: Profile) -> None:
    data = json.loads(json.dumps(mobilenet.to_dict()))
    assert {"layers", "totals", "parallelism", "fusion", "not_counted", "unknown_ops"} <= set(data)
    layer_fields = {"name", "op", "macs", "flops", "mults", "params", "bytes_read", "bytes_written",
                    "intensity", "measured_ms"}
    assert all(layer_fields <= set(row) for row in data["layers"])
    assert data["layers"][0]["measured_ms"] is None
    for key in ("macs", "flops", "mults", "params", "bytes_read", "bytes_written", "peak_activation_bytes",
                "unknown_ops"):
        assert key in data["totals"]
    assert data["totals"]["flops"] == sum(row["flops"] for row in data["layers"])
