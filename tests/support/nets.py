"""Known architectures built with `onnx.helper`, no downloads: ResNet-50 v1.5 and MobileNetV2 1.0.

Both are Conv + BatchNormalization + ReLU (ReLU6 as Clip) graphs with random float32 weights: the
profiler's counts depend on shapes only, and the published numbers (4,089,184,256 and 300,774,272
Conv+Gemm MACs; 25,557,032 and 3,504,872 learnable parameters) pin them down exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

OPSET = 17
Spec = Tuple[Sequence[int], str]  # shape, numpy dtype name


def write_onnx(path: Path, nodes: List, inputs: Dict[str, Spec], constants: Dict[str, Spec],
               outputs: List[str], domains: Tuple[str, ...] = ()) -> Path:
    """Writes a model of `nodes`: graph inputs as given, constants as zero-filled initializers."""
    from onnx import TensorProto, helper, numpy_helper

    values = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                            list(shape)) for name, (shape, dtype) in inputs.items()]
    weights = [numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)
               for name, (shape, dtype) in constants.items()]
    graph = helper.make_graph(nodes, path.stem, values,
                              [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outputs],
                              initializer=weights)
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, 1) for d in domains]
    path.write_bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())
    return path


class NetBuilder:
    """Accumulates nodes and float32 initializers of one NCHW network, then makes the ModelProto."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def weight(self, prefix: str, shape: Tuple[int, ...]) -> str:
        """A random float32 initializer of `shape`; returns its name."""
        from onnx import numpy_helper

        name = self._name(prefix)
        values = self.rng.random(shape, dtype=np.float32)
        self.initializers.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: List[str], **attributes: object) -> str:
        """Appends one single-output node; returns the output tensor name."""
        from onnx import helper

        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output + "_node", **attributes))
        return output

    def conv_bn(self, x: str, c_in: int, c_out: int, kernel: int, stride: int = 1, group: int = 1,
                activation: Optional[str] = "relu") -> str:
        """Conv (no bias) + BatchNormalization + optional ReLU or ReLU6 (Clip 0..6)."""
        w = self.weight("w", (c_out, c_in // group, kernel, kernel))
        pad = kernel // 2
        y = self.node("Conv", [x, w], kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=[pad] * 4, group=group)
        stats = [self.weight(p, (c_out,)) for p in ("gamma", "beta", "mean", "var")]
        y = self.node("BatchNormalization", [y, *stats])
        if activation == "relu":
            return self.node("Relu", [y])
        if activation == "relu6":
            return self.node("Clip", [y, "relu6_min", "relu6_max"])
        return y

    def classifier(self, x: str, features: int, classes: int = 1000) -> str:
        """GlobalAveragePool + Flatten + Gemm with bias, as torchvision's heads."""
        y = self.node("GlobalAveragePool", [x])
        y = self.node("Flatten", [y], axis=1)
        w = self.weight("fc_w", (classes, features))
        b = self.weight("fc_b", (classes,))
        return self.node("Gemm", [y, w, b], transB=1)

    def model(self, x: str, y: str, input_shape: Tuple[int, ...], output_shape: Tuple[int, ...]):
        """The finished onnx.ModelProto: float32 input `x` of `input_shape`, output `y`."""
        from onnx import TensorProto, helper, numpy_helper

        bounds = [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("relu6_min", 0.0), ("relu6_max", 6.0))]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(output_shape))],
            initializer=self.initializers + bounds)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def resnet50_v15(batch: int = 1, size: int = 224):  # -> onnx.ModelProto
    """ResNet-50 v1.5 (stride 2 on the bottleneck's 3x3 conv), torchvision's layout."""
    net = NetBuilder("resnet50_v15")
    y = net.conv_bn("input", 3, 64, 7, stride=2)
    y = net.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for width, blocks, first_stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            stride = first_stride if block == 0 else 1
            shortcut = y
            if block == 0:
                shortcut = net.conv_bn(y, c_in, width * 4, 1, stride=stride, activation=None)
            z = net.conv_bn(y, c_in, width, 1)
            z = net.conv_bn(z, width, width, 3, stride=stride)
            z = net.conv_bn(z, width, width * 4, 1, activation=None)
            y = net.node("Relu", [net.node("Add", [z, shortcut])])
            c_in = width * 4
    return net.model("input", net.classifier(y, 2048), (batch, 3, size, size), (batch, 1000))


def mobilenet_v2(batch: int = 1, size: int = 224):  # -> onnx.ModelProto
    """MobileNetV2 1.0 with inverted residual blocks (expansion t, channels c, repeats n, stride s)."""
    net = NetBuilder("mobilenet_v2")
    y = net.conv_bn("input", 3, 32, 3, stride=2, activation="relu6")
    c_in = 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for block in range(n):
            stride = s if block == 0 else 1
            hidden = c_in * t
            z = y if t == 1 else net.conv_bn(y, c_in, hidden, 1, activation="relu6")
            z = net.conv_bn(z, hidden, hidden, 3, stride=stride, group=hidden, activation="relu6")
            z = net.conv_bn(z, hidden, c, 1, activation=None)
            y = net.node("Add", [y, z]) if stride == 1 and c_in == c else z
            c_in = c
    y = net.conv_bn(y, 320, 1280, 1, activation="relu6")
    return net.model("input", net.classifier(y, 1280), (batch, 3, size, size), (batch, 1000))
