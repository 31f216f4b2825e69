"""Which convolutions a fast algorithm could compute with fewer multiplications, and how many fewer.

Winograd minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR
2016): F(m×m, r×r) computes an m×m output tile of an r×r filter with (m + r − 1)² multiplications per
input/output channel pair instead of m²·r². FFT convolution (Mathieu, Henaff & LeCun, "Fast Training
of Convolutional Networks through FFTs", ICLR 2014): each input and output map is transformed once
(a real 2-D FFT of n_h × n_w points, about n_h·n_w·log2(n_h·n_w) real multiplications), and every
channel pair costs the pointwise complex products of the half spectrum, n_h·(n_w/2 + 1) × 4 real
multiplications; the filters' transforms are computed offline. Transform additions are not counted.

Eligible: a 2-D convolution with stride 1 and dilation 1 that is not depthwise; 3×3 and 5×5 kernels
for Winograd, 7×7 and 9×9 for FFT. A candidate is listed only when it saves multiplications.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

WINOGRAD = {3: (2, 4), 5: (2,)}  # kernel size → output tile sizes m of F(m×m, r×r)
FFT_KERNELS = (7, 9)


def _spatial(shape: Sequence[int], layout: str) -> Sequence[int]:
    return shape[1:-1] if layout == "NHWC" else shape[2:]


def fast_algorithms(attributes: Dict[str, Any], in_shape: Optional[Sequence[int]],
                    out_shape: Optional[Sequence[int]], direct_mults: Optional[int]) -> List[Dict[str, object]]:
    """The fast algorithms a convolution layer is eligible for, each with its multiplications and the
    ones it saves against `direct_mults` (the direct convolution's MACs)."""
    kernel = list(attributes.get("kernel") or [])
    if (len(kernel) != 2 or kernel[0] != kernel[1] or direct_mults is None or in_shape is None
            or out_shape is None or len(out_shape) != 4 or len(in_shape) != 4):
        return []
    if any(int(s) != 1 for s in attributes.get("strides") or [1, 1]) or \
            any(int(d) != 1 for d in attributes.get("dilations") or [1, 1]):
        return []
    group = int(attributes.get("group") or 1)
    per_group = int(attributes.get("in_channels") or 0) // group
    if per_group <= 1:
        return []  # depthwise: one channel pair per output, nothing for a transform to share
    layout = str(attributes.get("layout", "NCHW"))
    batch, (height, width) = int(out_shape[0]), [int(d) for d in _spatial(out_shape, layout)]
    pairs = direct_mults // (height * width * kernel[0] * kernel[1])  # batch × C_out × C_in/group
    size = kernel[0]
    found = []
    for tile in WINOGRAD.get(size, ()):
        tiles = math.ceil(height / tile) * math.ceil(width / tile)
        found.append((f"winograd F({tile}x{tile},{size}x{size})", pairs * tiles * (tile + size - 1) ** 2))
    if size in FFT_KERNELS:
        pads = list(attributes.get("pads") or [0, 0, 0, 0])
        rows, columns = [int(d) for d in _spatial(in_shape, layout)]
        n_h = 1 << (rows + int(pads[0]) + int(pads[2]) - 1).bit_length()
        n_w = 1 << (columns + int(pads[1]) + int(pads[3]) - 1).bit_length()
        channels_out = pairs // (batch * per_group) if batch * per_group else 0
        maps = batch * (per_group * group + channels_out)
        transforms = maps * int(n_h * n_w * math.log2(n_h * n_w))
        found.append((f"fft {n_h}x{n_w}", pairs * n_h * (n_w // 2 + 1) * 4 + transforms))
    return [{"name": name, "mults": mults, "saved_mults": direct_mults - mults}
            for name, mults in found if mults < direct_mults]
