"""Low-rank factorisations of one weight tensor, with numpy's SVD alone.

- a matrix W (K x N) into A (K x r) and B (r x N), the truncated SVD (Eckart–Young: the best rank-r
  approximation in the Frobenius norm);
- a convolution kernel W (O, I, kh, kw) into Tucker-2 factors by the HOSVD (De Lathauwer et al., 2000;
  used for CNNs by Kim et al., ICLR 2016): U_in (I x r_in) and U_out (O x r_out) are the leading left
  singular vectors of the mode-1 and mode-0 unfoldings, core = W x_0 U_out^T x_1 U_in^T;
- or into a vertical kh x 1 and a horizontal 1 x kw kernel through the SVD of W laid out as an
  (I*kh) x (O*kw) matrix (Jaderberg et al., BMVC 2014, scheme 2, in the closed form of Tai et al., ICLR 2016).

Each factorisation says how much of the kernel's energy ||W||^2 it keeps and its relative error
||W - W_hat|| / ||W||.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np


@dataclass
class Factors:
    """A weight tensor as a chain of factors, applied first to last, and how close their product is."""

    arrays: List[np.ndarray]
    ranks: Tuple[int, ...]
    kept_energy: float
    relative_error: float


def spectrum(matrix: np.ndarray) -> np.ndarray:
    """The singular values of `matrix`, largest first."""
    return np.linalg.svd(matrix.astype(np.float64), compute_uv=False)


def rank_for_energy(values: np.ndarray, energy: float) -> int:
    """The smallest rank whose singular values keep at least `energy` of sum(s^2) (at least 1)."""
    share = np.cumsum(values ** 2) / max(float(np.sum(values ** 2)), 1e-300)
    return min(len(values), max(1, int(np.searchsorted(share, energy - 1e-12)) + 1))


def unfold(kernel: np.ndarray, mode: int) -> np.ndarray:
    """The mode-`mode` unfolding: that axis as rows, every other axis flattened into the columns."""
    return np.moveaxis(kernel, mode, 0).reshape(kernel.shape[mode], -1)


def spatial_matrix(kernel: np.ndarray) -> np.ndarray:
    """W (O, I, kh, kw) laid out as M[(i, y), (o, x)] = W[o, i, y, x], the matrix the spatial form truncates."""
    out_channels, in_channels, height, width = kernel.shape
    return kernel.transpose(1, 2, 0, 3).reshape(in_channels * height, out_channels * width)


def _closeness(original: np.ndarray, approximation: np.ndarray) -> Tuple[float, float]:
    total = float(np.sum(original.astype(np.float64) ** 2)) or 1e-300
    error = float(np.sum((original.astype(np.float64) - approximation) ** 2))
    return float(np.sum(approximation ** 2)) / total, (error / total) ** 0.5


def _split(matrix: np.ndarray, rank: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank], (u[:, :rank] * s[:rank]) @ vt[:rank]


def matrix_factors(weight: np.ndarray, rank: int) -> Factors:
    """W (K x N) = A (K x r) @ B (r x N), the singular values split evenly between the two."""
    first, second, product = _split(weight, rank)
    kept, error = _closeness(weight, product)
    return Factors([first.astype(np.float32), second.astype(np.float32)], (rank,), kept, error)


def tucker2_factors(kernel: np.ndarray, out_rank: int, in_rank: int) -> Factors:
    """W (O, I, kh, kw) as [U_in^T as a 1x1 conv, the core, U_out as a 1x1 conv]; a mode kept at its full
    size has no 1x1 conv (the core takes its place)."""
    out_channels, in_channels = kernel.shape[:2]
    wide = kernel.astype(np.float64)
    u_out = np.linalg.svd(unfold(wide, 0), full_matrices=False)[0][:, :out_rank]
    u_in = np.linalg.svd(unfold(wide, 1), full_matrices=False)[0][:, :in_rank]
    if out_rank == out_channels:
        u_out = np.eye(out_channels)
    if in_rank == in_channels:
        u_in = np.eye(in_channels)
    core = np.einsum("oiyx,or,is->rsyx", wide, u_out, u_in, optimize=True)
    kept, error = _closeness(kernel, np.einsum("rsyx,or,is->oiyx", core, u_out, u_in, optimize=True))
    arrays: List[Optional[np.ndarray]] = [
        None if in_rank == in_channels else u_in.T[:, :, None, None], core,
        None if out_rank == out_channels else u_out[:, :, None, None]]
    return Factors([a.astype(np.float32) for a in arrays if a is not None], (out_rank, in_rank), kept, error)


def spatial_factors(kernel: np.ndarray, rank: int) -> Factors:
    """W (O, I, kh, kw) as a kh x 1 conv I -> r, then a 1 x kw conv r -> O."""
    out_channels, in_channels, height, width = kernel.shape
    first, second, product = _split(spatial_matrix(kernel), rank)
    vertical = first.T.reshape(rank, in_channels, height, 1)
    horizontal = second.reshape(rank, out_channels, 1, width).transpose(1, 0, 2, 3)
    approximation = product.reshape(in_channels, height, out_channels, width).transpose(2, 0, 1, 3)
    kept, error = _closeness(kernel, approximation)
    return Factors([vertical.astype(np.float32), horizontal.astype(np.float32)], (rank,), kept, error)
