"""The explicit list of backends, and which of them can run on this board."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from agent.backends.base import Backend, BackendStatus
from agent.backends.onnxruntime import OnnxRuntimeBackend
from agent.backends.tensorrt.backend import TensorRTBackend
from agent.backends.tflite import TfliteBackend
from agent.errors import BackendUnavailableError, RuntimeUnavailableError, UsageError

BACKENDS: Dict[str, Backend] = {b.name: b for b in (OnnxRuntimeBackend(), TfliteBackend(), TensorRTBackend())}


def get_backend(name: str) -> Backend:
    """The backend called `name`, or a `UsageError` listing the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})") from None


def statuses() -> List[BackendStatus]:
    """Every backend with its version or the reason it cannot run here."""
    return [backend.status() for backend in BACKENDS.values()]


def require_available(name: str) -> Backend:
    """The backend called `name` if it can run here, else `BackendUnavailableError` with the reason."""
    backend = get_backend(name)
    status = backend.status()
    if status.details.get("failed_to_load"):
        raise RuntimeUnavailableError(f"backend {name} is unavailable: {status.reason}")
    if not status.available:
        raise BackendUnavailableError(f"backend {name} is unavailable: {status.reason}")
    return backend


# NVIDIA GPU device nodes: a discrete GPU's, and a Jetson's integrated one's (JetPack 5 and 6).
GPU_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl")


def gpu_device_node() -> Optional[str]:
    """The first NVIDIA GPU device node present: a discrete GPU, or a Jetson's integrated one."""
    for node in GPU_NODES:
        if os.path.exists(node):
            return node
    return None


def _cuda_status() -> BackendStatus:
    node = gpu_device_node()
    if node is None:
        return BackendStatus("cuda", False, reason="no GPU (no NVIDIA device node in /dev)")
    return BackendStatus("cuda", True, reason=None, details={"device_node": node})


def runtime_statuses() -> List[BackendStatus]:
    """The measurement backends, then CUDA (which TensorRT and ONNX Runtime's GPU providers need)."""
    return statuses() + [_cuda_status()]
