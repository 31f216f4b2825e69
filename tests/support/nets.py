"""Known architectures built with `onnx.helper`, no downloads: ResNet-50 v1.5 and MobileNetV2 1.0 (the zoo's
builders, agent/zoo), and `write_onnx` for small hand-made graphs.

Both are Conv + BatchNormalization + ReLU (ReLU6 as Clip) graphs with random float32 weights: the
profiler's counts depend on shapes only, and the published numbers (4,089,184,256 and 300,774,272
Conv+Gemm MACs; 25,557,032 and 3,504,872 learnable parameters) pin them down exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from agent.zoo.nets import mobilenet_v2 as zoo_mobilenet_v2
from agent.zoo.nets import resnet

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


def resnet50_v15(batch: int = 1, size: int = 224):  # -> onnx.ModelProto
    """ResNet-50 v1.5 (stride 2 on the bottleneck's 3x3 conv), torchvision's layout (agent/zoo/nets.py)."""
    net = resnet(50, batch, size)
    return net.model(net.output)


def mobilenet_v2(batch: int = 1, size: int = 224):  # -> onnx.ModelProto
    """MobileNetV2 1.0 with inverted residual blocks (agent/zoo/nets.py)."""
    net = zoo_mobilenet_v2(1.0, batch, size)
    return net.model(net.output)
