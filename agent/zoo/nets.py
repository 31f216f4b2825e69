"""Published architectures built with `NetBuilder`: ResNet-50 v1.5 and ResNet-101, MobileNet V1, MobileNet V2 at
width 1.0 and 1.4, ShuffleNet V1 at 1.5x and 2x. Each returns the builder after the network is added, so its
own MAC count goes with the model (`builder.model(builder.output)`).
"""

from __future__ import annotations

from typing import Sequence

from agent.zoo.builder import NetBuilder


def _divisible(value: float, divisor: int = 8) -> int:
    """MobileNet V2's channel rounding: the nearest multiple of `divisor`, never 10 % below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def resnet(depth: int = 50, batch: int = 1, size: int = 224) -> NetBuilder:
    """ResNet-50 v1.5 / ResNet-101 v1.5 (stride 2 on the bottleneck's 3x3 conv), torchvision's layout."""
    blocks: Sequence[int] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    net = NetBuilder(f"resnet{depth}_v15", (3, size, size), batch)
    y = net.pool(net.conv_bn("input", 64, 7, stride=2), "MaxPool", 3, 2, 1)
    for width, repeats, first_stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
        for block in range(repeats):
            stride = first_stride if block == 0 else 1
            shortcut = net.conv_bn(y, width * 4, 1, stride=stride, activation=None) if block == 0 else y
            z = net.conv_bn(net.conv_bn(y, width, 1), width, 3, stride=stride)
            z = net.conv_bn(z, width * 4, 1, activation=None)
            y = net.node("Relu", [net.node("Add", [z, shortcut])])
    net.output = net.classifier(y)
    return net


def mobilenet_v1(batch: int = 1, size: int = 224) -> NetBuilder:
    """MobileNet V1 1.0 (Howard et al., 2017): a 3x3 conv, then 13 depthwise 3x3 + pointwise 1x1 pairs."""
    net = NetBuilder("mobilenet_v1", (3, size, size), batch)
    y = net.conv_bn("input", 32, 3, stride=2)
    for channels, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)):
        y = net.conv_bn(y, net.shapes[y][0], 3, stride=stride, group=net.shapes[y][0])
        y = net.conv_bn(y, channels, 1)
    net.output = net.classifier(y)
    return net


def mobilenet_v2(width: float = 1.0, batch: int = 1, size: int = 224) -> NetBuilder:
    """MobileNet V2 (Sandler et al., 2018) at a width multiplier: inverted residual blocks (expansion t,
    channels c, repeats n, stride s), channels rounded to multiples of 8, the last conv 1280 x max(1, width)."""
    net = NetBuilder("mobilenet_v2" if width == 1.0 else f"mobilenet_v2_{width:g}", (3, size, size), batch)
    y = net.conv_bn("input", _divisible(32 * width), 3, stride=2, activation="relu6")
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        out = _divisible(c * width)
        for block in range(n):
            stride, c_in = (s if block == 0 else 1), net.shapes[y][0]
            hidden = c_in * t
            z = y if t == 1 else net.conv_bn(y, hidden, 1, activation="relu6")
            z = net.conv_bn(z, hidden, 3, stride=stride, group=hidden, activation="relu6")
            z = net.conv_bn(z, out, 1, activation=None)
            y = net.node("Add", [y, z]) if stride == 1 and c_in == out else z
    y = net.conv_bn(y, _divisible(1280 * max(1.0, width)), 1, activation="relu6")
    net.output = net.classifier(y)
    return net


# ShuffleNet V1's output channels of stages 2..4 at 1x, per group count (Zhang et al., 2018, Table 1).
SHUFFLE_STAGES = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}


def shufflenet_v1(scale: float = 1.0, groups: int = 3, batch: int = 1, size: int = 224) -> NetBuilder:
    """ShuffleNet V1 (Zhang et al., CVPR 2018) at a scale factor: a 3x3 conv (24 channels, 48 from 2x) and a
    max pool, then stages of 4, 8, 4 units. A unit: grouped 1x1 (bottleneck = output / 4; not grouped in the
    first unit, whose input has 24 channels), channel shuffle, 3x3 depthwise, grouped 1x1; stride-2 units
    concatenate a 3x3 average pool of their input, the others add it."""
    net = NetBuilder(f"shufflenet_v1_{scale:g}x_g{groups}", (3, size, size), batch)
    y = net.pool(net.conv_bn("input", 48 if scale >= 2 else 24, 3, stride=2), "MaxPool", 3, 2, 1)
    for stage, repeats in enumerate((4, 8, 4)):
        out = int(SHUFFLE_STAGES[groups] * scale) * 2 ** stage
        for unit in range(repeats):
            c_in, stride = net.shapes[y][0], (2 if unit == 0 else 1)
            first = 1 if stage == 0 and unit == 0 else groups
            z = net.shuffle(net.conv_bn(y, out // 4, 1, group=first), first) if first > 1 else \
                net.conv_bn(y, out // 4, 1)
            z = net.conv_bn(z, out // 4, 3, stride=stride, group=out // 4, activation=None)
            z = net.conv_bn(z, out - c_in if stride == 2 else out, 1, group=groups, activation=None)
            merged = net.concat([net.pool(y, "AveragePool", 3, 2, 1), z]) if stride == 2 else net.node("Add", [y, z])
            y = net.node("Relu", [merged])
    net.output = net.classifier(y)
    return net
