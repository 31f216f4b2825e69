"""edge-agent: measure how fast and how accurately a model runs on this board, and report it.

`import agent` needs numpy alone; every runtime (ONNX Runtime, TFLite, TensorRT) and every
transport (paho-mqtt) is imported lazily by the module that uses it.
"""

import os
from typing import Dict

__version__ = "0.1.0"


def child_env(**overrides: str) -> Dict[str, str]:
    """The environment for a child `python -m agent.…`: this process's, `overrides`, and this package on
    PYTHONPATH (the child imports the very code that started it, installed or not)."""
    env = dict(os.environ, **overrides)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
