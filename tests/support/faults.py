"""The test suite's measurement-worker hook: real crashes, hangs and allocation failures on purpose.

A test that wants a failing worker starts the agent (or `run_worker`) with `fault_env(kind)` in its
environment: EDGE_AGENT_WORKER_HOOK names `inject` below (importable through the PYTHONPATH set
there), and the worker calls it after the model is loaded, before anything is timed. Nothing that
arrives over MQTT can reach it: only the process environment names the hook.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict

import numpy as np

from agent.measure.messages import WorkerRequest
from agent.measure.worker import WORKER_HOOK_ENV

FAULT_ENV = "EDGE_AGENT_TEST_FAULT"
FAULTS = ("segfault", "abort", "hang", "exit", "oom")
TESTS = Path(__file__).resolve().parents[1]  # `support.faults` is importable from here


def fault_env(kind: str) -> Dict[str, str]:
    """The environment variables that make every worker started under them fail with `kind`."""
    assert kind in FAULTS, kind
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {WORKER_HOOK_ENV: "support.faults:inject", FAULT_ENV: kind, "PYTHONPATH": path}


def inject(request: WorkerRequest) -> None:
    """The hook: fail the way EDGE_AGENT_TEST_FAULT says (a NULL read, abort(), a sleep past any time
    limit, an exit without a result, or 16 GiB of address space that fails at once under a memory limit)."""
    kind = os.environ.get(FAULT_ENV)
    if kind == "segfault":
        import ctypes
        ctypes.string_at(0)
    elif kind == "abort":
        os.abort()
    elif kind == "hang":
        time.sleep(3600)
    elif kind == "exit":
        os._exit(3)
    elif kind == "oom":
        np.empty(16 << 30, dtype=np.uint8)
