"""Model files are recognised by extension and first bytes; a .tflite file is bounds-checked whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ModelFormatError
from agent.modelfile import model_format


@pytest.mark.parametrize("name", ["digits/model.fp32.tflite", "digits/model.int8.tflite",
                                  "mobilenet_v2/model.int8.tflite", "digits/model.fp32.onnx"])
def test_intact_models_pass(name: str) -> None:
    path = Path(__file__).resolve().parent.parent / "models" / name
    assert model_format(path) == path.suffix[1:]


@pytest.mark.parametrize("name", ["model.fp32.tflite", "model.int8.tflite"])
def test_every_truncation_of_a_tflite_file_is_caught(tmp_path: Path, digits: Path, name: str) -> None:
    data = (digits / name).read_bytes()
    cuts = list(range(8, len(data), len(data) // 150)) + list(range(len(data) - 120, len(data)))
    target = tmp_path / name
    missed = []
    for cut in cuts:
        target.write_bytes(data[:cut])
        try:
            model_format(target)
        except ModelFormatError as exc:
            assert "truncated or corrupt" in str(exc) and name in str(exc)
        else:
            missed.append(cut)
    assert not missed, f"truncations at {missed[:5]} of {len(data)} bytes were not caught"


def test_a_tflite_header_on_garbage_is_caught(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 64)
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        model_format(fake)
