"""ONNX Runtime and TFLite sessions on the bundled model files: real interpreters, real weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agent.backends.base import TensorInfo, dequantize, quantize
from agent.backends.registry import GPU_NODES, get_backend, require_available, runtime_statuses, statuses
from agent.bundle import open_model
from agent.errors import BackendUnavailableError, ModelFormatError, UsageError
from agent.measure.accuracy import fidelity, topk_accuracy


def _evaluate(bundle_path: Path, key: str, limit: int = 450):
    bundle = open_model(bundle_path)
    model = next(m for m in bundle.models if m.key == key)
    backend = get_backend("onnxruntime" if model.format == "onnx" else "tflite")
    session = backend.load(model.path, 1, backend.validate_options({}))
    x, y = bundle.evaluation.load(limit)
    feeds = bundle.preprocessing.apply(x, bundle.inputs[0].layout)
    outputs = np.concatenate([session.run([feeds[i:i + 1]])[0] for i in range(len(feeds))])
    return session, outputs, y


def test_every_backend_reports_its_status() -> None:
    found = {s.name: s for s in runtime_statuses()}
    assert found["onnxruntime"].available and found["onnxruntime"].version
    assert found["tflite"].available and found["tflite"].details["package"] in ("ai_edge_litert", "tflite_runtime")
    assert [s.name for s in statuses()] == ["onnxruntime", "tflite", "tensorrt"]
    for name in ("tensorrt", "cuda"):  # whatever this machine has: a version, or the reason it has none
        status = found[name]
        assert (status.available and status.reason is None) or (not status.available and status.reason)


@pytest.mark.skipif(any(os.path.exists(node) for node in GPU_NODES), reason="this machine has an NVIDIA GPU")
def test_without_a_gpu_cuda_and_tensorrt_say_why() -> None:
    found = {s.name: s for s in runtime_statuses()}
    assert found["cuda"].reason == "no GPU (no NVIDIA device node in /dev)"
    assert not found["tensorrt"].available and found["tensorrt"].reason


def test_twins_agree_and_are_accurate(digits: Path) -> None:
    ort, ort_out, labels = _evaluate(digits, "onnx/fp32")
    tfl, tfl_out, _ = _evaluate(digits, "tflite/fp32")
    assert ort.precision == "fp32" and tfl.precision == "fp32"
    assert topk_accuracy(ort_out, labels)["top1"] >= 0.95
    agreement = fidelity(ort_out, tfl_out)
    assert agreement["top1_agreement"] == 1.0 and agreement["cosine"] >= 0.9999


def test_int8_session_quantizes_its_input_and_dequantizes_its_output(digits: Path) -> None:
    session, outputs, labels = _evaluate(digits, "tflite/int8")
    assert session.precision == "int8"
    assert session.inputs[0].dtype == "int8" and session.inputs[0].quantization is not None
    assert outputs.dtype == np.float32
    _, fp32, _ = _evaluate(digits, "tflite/fp32")
    assert topk_accuracy(outputs, labels)["top1"] >= topk_accuracy(fp32, labels)["top1"] - 0.01


def test_quantize_round_trip_clips_to_the_dtype() -> None:
    info = TensorInfo("x", (4,), "int8", (0.5, -3))
    values = np.array([0.0, 1.0, 1000.0, -1000.0], dtype=np.float32)
    q = quantize(values, info)
    assert q.dtype == np.int8 and q.tolist() == [-3, -1, 127, -128]
    assert dequantize(q, info).tolist() == [0.0, 1.0, 65.0, -62.5]


def test_tflite_resizes_a_dynamic_batch(digits: Path) -> None:
    backend = get_backend("tflite")
    session = backend.load(digits / "model.fp32.tflite", 1, backend.validate_options({}))
    assert session.inputs[0].shape[0] is None, "the digits model has a dynamic batch signature"
    session.resize([(4, 8, 8, 1)])
    out = session.run([np.zeros((4, 8, 8, 1), np.float32)])
    assert out[0].shape == (4, 10)


def test_hot_call_is_the_runtime_own(digits: Path) -> None:
    backend = get_backend("tflite")
    session = backend.load(digits / "model.fp32.tflite", 1, backend.validate_options({"xnnpack": "off"}))
    assert session.configuration["xnnpack"] is False
    call = session.bind([np.zeros((1, 8, 8, 1), np.float32)])
    assert call.__name__ == "invoke"


def test_options_are_validated() -> None:
    ort = get_backend("onnxruntime")
    assert ort.validate_options({"graph_optimization": "basic"})["graph_optimization"] == "basic"
    with pytest.raises(UsageError, match="takes one of disable, basic, extended, all"):
        ort.validate_options({"graph_optimization": "max"})
    with pytest.raises(UsageError, match="has no option 'turbo'"):
        ort.validate_options({"turbo": "1"})
    with pytest.raises(UsageError, match="takes on/off"):
        get_backend("tflite").validate_options({"xnnpack": "maybe"})
    with pytest.raises(UsageError, match="unknown backend 'nosuch'"):
        require_available("nosuch")


def _litert_verifies() -> bool:
    from agent.backends.tflite import import_interpreter

    return import_interpreter()[1] == "ai_edge_litert"


@pytest.mark.parametrize("name, backend", [
    ("model.fp32.onnx", "onnxruntime"),
    pytest.param("model.fp32.tflite", "tflite", marks=pytest.mark.skipif(
        not _litert_verifies(), reason="tflite-runtime does not verify flatbuffers: a truncated file crashes it, "
        "which is why agent.modelfile checks .tflite files before any runtime loads them")),
])
def test_a_runtime_refusing_a_truncated_model_is_a_format_error(tmp_path: Path, digits: Path, name: str,
                                                                 backend: str) -> None:
    truncated = tmp_path / name
    truncated.write_bytes((digits / name).read_bytes()[:2000])
    impl = get_backend(backend)
    with pytest.raises(ModelFormatError, match=f"cannot load {name}"):
        impl.load(truncated, 1, impl.validate_options({}))


def test_unavailable_backend_error_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """TFLite is installed here, so its absence is simulated by making its import fail (a test double)."""
    import agent.backends.tflite as tflite

    monkeypatch.setattr(tflite, "_RUNTIMES", (("no_such_litert", "no_such_litert.interpreter"),))
    with pytest.raises(BackendUnavailableError, match="TFLite runtime .* not installed") as caught:
        require_available("tflite")
    assert type(caught.value) is BackendUnavailableError and caught.value.code == "backend_unavailable"


def test_a_runtime_that_is_installed_but_fails_to_load_says_so_in_the_loaders_words(tmp_path: Path) -> None:
    """Under an address-space limit too small to map its libraries, onnxruntime's import fails (the
    loader's "failed to map segment" or a MemoryError): `runtime_unavailable`, not "not installed".
    A real import in a child process with a real RLIMIT_AS."""
    import subprocess
    import sys

    code = ("import re, resource\n"
            "from agent.backends.registry import require_available\n"
            "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) << 10\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + (8 << 20),) * 2)  # no room left to map onnxruntime\n"
            "try:\n    require_available('onnxruntime')\n"
            "except Exception as error:\n    print(type(error).__name__, error.code, str(error))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert done.stdout.startswith("RuntimeUnavailableError runtime_unavailable backend onnxruntime is unavailable: "
                                  "onnxruntime failed to load: "), (done.stdout, done.stderr)
