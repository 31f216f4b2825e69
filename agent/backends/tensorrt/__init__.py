"""The TensorRT backend (8.5 and 10.x Python APIs): `backend` (the Backend), `engine` (building and
loading engines), `session` (running them through pycuda), `io` (binding tensors), `support` (the
GPU-free parts: versions, cache keys, shape profiles, calibration batches). TensorRT and pycuda are
imported lazily, inside functions, so this package imports without them.
"""
