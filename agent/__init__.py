"""edge-agent: measure how fast and how accurately a model runs on this board, and report it.

`import agent` needs numpy alone; every runtime (ONNX Runtime, TFLite, TensorRT) and every
transport (paho-mqtt) is imported lazily by the module that uses it.
"""

__version__ = "0.1.0"
