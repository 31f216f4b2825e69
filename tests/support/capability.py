"""Skips by capability, without a conftest: a test that needs TensorRT or a GPU says so and skips
with the precise reason this machine gives (the backend's own status line)."""

from __future__ import annotations

import pytest


def tensorrt_reason() -> str:
    """Why TensorRT cannot run here ('' when it can): 'tensorrt: not installed', 'cuda: no GPU', ..."""
    from agent.backends.tensorrt.backend import probe

    status = probe()
    return "" if status.available else str(status.reason)


def needs_tensorrt() -> pytest.MarkDecorator:
    """Mark a test `tensorrt` + `gpu` and skip it where TensorRT, pycuda or a CUDA GPU is missing."""
    reason = tensorrt_reason()
    return pytest.mark.skipif(bool(reason), reason=f"needs TensorRT on a CUDA GPU: {reason}")
