"""Accuracy against labels (Top-1/Top-5) and fidelity against the FP32 reference run's outputs.

A sample whose output holds NaN or Inf is counted and reported, never averaged away: it counts as a
miss for Top-k, and the fidelity figures are computed over the finite samples only, next to the
number of samples left out.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np


def nonfinite_rows(outputs: np.ndarray) -> np.ndarray:
    """Boolean mask of the samples (first axis) whose outputs hold a NaN or an Inf."""
    flat = outputs.reshape(len(outputs), -1)
    return ~np.isfinite(flat).all(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    """Top-1 and Top-5 of class scores `[N, C]` against labels `[N]`; non-finite rows are misses."""
    scores = scores.reshape(len(scores), -1)
    bad = nonfinite_rows(scores)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
    hits_top1 = (order[:, 0] == labels) & ~bad
    k = min(5, scores.shape[1])
    hits_top5 = (order[:, :k] == labels[:, None]).any(axis=1) & ~bad
    return {
        "top1": float(hits_top1.mean()) if len(labels) else None,
        "top5": float(hits_top5.mean()) if len(labels) else None,
        "samples": int(len(labels)),
        "nonfinite_samples": int(bad.sum()),
    }


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> Dict[str, Any]:
    """How closely `candidate` outputs follow the reference's, sample by sample (first axis)."""
    if reference.shape != candidate.shape:
        return {"error": f"output shapes differ: reference {list(reference.shape)}, "
                         f"candidate {list(candidate.shape)}", "samples": int(len(candidate))}
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    keep = ~(nonfinite_rows(ref) | nonfinite_rows(cand))
    result: Dict[str, Any] = {"samples": int(len(cand)), "nonfinite_samples": int((~keep).sum())}
    ref, cand = ref[keep], cand[keep]
    if not len(ref):
        result.update(top1_agreement=None, cosine=None, cosine_min=None, max_abs_error=None, snr_db=None)
        return result
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosines = np.where(norms > 0, (ref * cand).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    error = cand - ref
    result.update(
        top1_agreement=float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()),
        cosine=float(cosines.mean()),
        cosine_min=float(cosines.min()),
        max_abs_error=float(np.abs(error).max()),
        snr_db=_snr_db(float((ref ** 2).sum()), float((error ** 2).sum())),
    )
    return result


def _snr_db(signal: float, noise: float) -> Optional[float]:
    """Signal-to-noise ratio in dB; `None` when it is undefined (identical outputs, or an all-zero reference)."""
    if noise == 0.0 or signal == 0.0:
        return None
    return 10.0 * math.log10(signal / noise)
