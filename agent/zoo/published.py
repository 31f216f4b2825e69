"""The published figures the zoo is printed beside, each with where it comes from.

Lightweight networks: the comparison table of MobileNetV2 (Sandler et al., arXiv:1801.04381, Table 4 of v1,
January 2018): Top-1 on ImageNet, parameters, multiply-adds at 224 x 224, and the CPU time on one core of
a Google Pixel 1 phone (TF-Lite). Its v4 revised two ShuffleNet rows (`revised_params_m`); TF-slim's model
table (tensorflow/models research/slim/nets/mobilenet) gives MobileNet V2 1.4's parameters as 6.06 M.
ResNets: the TensorRT 4 seed table (TitanXp, batch 8), facts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from agent.zoo.nets import mobilenet_v1, mobilenet_v2, shufflenet_v1


@dataclass(frozen=True)
class Published:
    """One lightweight network: how to build it, and what the paper printed."""

    name: str
    variant: str
    build: Callable[..., Any]
    top1: float
    params_m: float
    macs_m: int
    cpu_ms: Optional[int]
    revised_params_m: Optional[float] = None
    note: str = ""


LIGHTWEIGHT: Tuple[Published, ...] = (
    Published("MobileNet V1", "1.0, 224", mobilenet_v1, 70.6, 4.2, 575, 123),
    Published("ShuffleNet (1.5)", "V1, 1.5x, g=3", lambda **kw: shufflenet_v1(1.5, 3, **kw), 69.0, 2.9, 292, None,
              3.4, "v4 of the paper: 3.4 M, 71.5 %"),
    Published("ShuffleNet (x2)", "V1, 2x, g=3", lambda **kw: shufflenet_v1(2.0, 3, **kw), 70.9, 4.4, 524, None,
              5.4, "v4 of the paper: 5.4 M, 73.7 %"),
    Published("MobileNet V2", "1.0, 224", mobilenet_v2, 71.7, 3.4, 300, 80, None,
              "3.47 M without BatchNorm's scale and shift (TF-slim), cut to 3.4"),
    Published("MobileNet V2 (1.4)", "1.4, 224", lambda **kw: mobilenet_v2(1.4, **kw), 74.7, 6.9, 585, 149, None,
              "TF-slim: 6.06 M, 582 M MACs, as built here without BatchNorm's scale and shift"),
)


@dataclass(frozen=True)
class TensorRTRow:
    """A row of the TensorRT 4 seed table: batch 8 on a TitanXp, FP32 and INT8 latency and Top-1."""

    name: str
    depth: int
    fp32_ms: float
    int8_ms: float
    fp32_top1: float
    int8_top1: float


TENSORRT: Tuple[TensorRTRow, ...] = (
    TensorRTRow("ResNet-50", 50, 12.1, 6.0, 73.74, 72.26),
    TensorRTRow("ResNet-101", 101, 19.3, 9.0, 76.12, 75.74),
)

