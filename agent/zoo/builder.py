"""A small builder of NCHW networks as ONNX graphs (`onnx.helper`, imported on use), with seeded random weights.

Weights are He-normal (std sqrt(2 / fan-in)) and BatchNormalization starts as the identity (scale 1, shift
0, mean 0, variance 1), so activations stay in range through deep stacks: a random network that INT8 can be
calibrated on and compared with FP32. The builder follows every tensor's shape and counts the Conv and
Gemm multiply-accumulates itself as it adds them (`macs`), a second count beside the profiler's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

OPSET = 17
Shape = Tuple[int, int, int]  # channels, height, width (the batch is the builder's)


class NetBuilder:
    """Accumulates the nodes and initializers of one network from its input `image` (C, H, W)."""

    def __init__(self, name: str, image: Shape = (3, 224, 224), batch: int = 1, seed: int = 0) -> None:
        self.name, self.batch = name, batch
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.macs = 0
        self.shapes: Dict[str, Shape] = {"input": image}
        self.output = ""  # the last tensor, set by the architecture

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, prefix: str, values: np.ndarray) -> str:
        """An initializer holding `values`; returns its name."""
        from onnx import numpy_helper

        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(values, name))
        return name

    def weight(self, prefix: str, shape: Tuple[int, ...], fan_in: int) -> str:
        """A He-normal float32 initializer of `shape`."""
        return self.constant(prefix, self.rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32))

    def node(self, op: str, inputs: List[str], shape: Optional[Shape] = None, **attributes: Any) -> str:
        """Appends one single-output node whose output has `shape` (default: its first input's)."""
        from onnx import helper

        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output + "_node", **attributes))
        self.shapes[output] = shape or self.shapes[inputs[0]]
        return output

    def conv_bn(self, x: str, c_out: int, kernel: int, stride: int = 1, group: int = 1,
                activation: Optional[str] = "relu") -> str:
        """Conv (no bias, "same" padding) + BatchNormalization + ReLU, ReLU6 (Clip 0..6) or nothing."""
        c_in, height, width = self.shapes[x]
        pad = kernel // 2
        out = (c_out, (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1)
        self.macs += out[1] * out[2] * c_out * (c_in // group) * kernel * kernel * self.batch
        w = self.weight("w", (c_out, c_in // group, kernel, kernel), (c_in // group) * kernel * kernel)
        y = self.node("Conv", [x, w], out, kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=[pad] * 4, group=group)
        stats = [self.constant(p, np.full(c_out, v, np.float32))
                 for p, v in (("gamma", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0))]
        y = self.node("BatchNormalization", [y, *stats])
        if activation == "relu":
            return self.node("Relu", [y])
        if activation == "relu6":
            return self.node("Clip", [y, "relu6_min", "relu6_max"])
        return y

    def pool(self, x: str, op: str, kernel: int, stride: int, pad: int) -> str:
        """MaxPool or AveragePool with a square window."""
        c, height, width = self.shapes[x]
        out = (c, (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1)
        return self.node(op, [x], out, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)

    def concat(self, inputs: List[str]) -> str:
        """Concatenation along the channels."""
        _, height, width = self.shapes[inputs[0]]
        return self.node("Concat", inputs, (sum(self.shapes[i][0] for i in inputs), height, width), axis=1)

    def shuffle(self, x: str, groups: int) -> str:
        """ShuffleNet's channel shuffle: Reshape to (N, g, C/g, H, W), swap g and C/g, Reshape back."""
        c, height, width = self.shapes[x]
        split = self.constant("split", np.array([self.batch, groups, c // groups, height, width], np.int64))
        whole = self.constant("whole", np.array([self.batch, c, height, width], np.int64))
        y = self.node("Reshape", [x, split])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, whole])

    def classifier(self, x: str, classes: int = 1000) -> str:
        """GlobalAveragePool + Flatten + Gemm with bias, as torchvision's heads."""
        features = self.shapes[x][0]
        y = self.node("GlobalAveragePool", [x], (features, 1, 1))
        y = self.node("Flatten", [y], axis=1)
        self.macs += features * classes * self.batch
        w = self.weight("fc_w", (classes, features), features)
        b = self.constant("fc_b", np.zeros(classes, np.float32))
        return self.node("Gemm", [y, w, b], (classes, 1, 1), transB=1)

    def model(self, y: str, dynamic_batch: bool = False) -> Any:
        """The finished onnx.ModelProto: float32 input `input` of (batch, C, H, W), output `y` (batch, classes);
        the batch dimension is the symbol `batch` with `dynamic_batch` (a network without a Reshape)."""
        from onnx import TensorProto, helper, numpy_helper

        batch: Any = "batch" if dynamic_batch else self.batch
        bounds = [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("relu6_min", 0.0), ("relu6_max", 6.0))]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *self.shapes["input"]])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, self.shapes[y][0]])],
            initializer=self.initializers + bounds)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # ONNX Runtime 1.19 (JetPack 5's Python 3.8) reads up to 9
        return model
