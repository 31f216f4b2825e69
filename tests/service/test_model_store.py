"""The model store as the daemon reads it: listing, name resolution and deploy leftovers, on real
folders with real links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agent.errors import ModelNotFoundError, ProtocolError
from agent.service.model_store import WORK_PREFIX, list_models, remove_leftovers, resolve_model


@pytest.fixture
def store(tmp_path: Path, digits: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(digits, root / "vision" / "digits")
    shutil.copy(digits / "model.fp32.onnx", root / "plain.onnx")
    return root


def test_bundles_and_plain_files_are_listed(store: Path) -> None:
    names = {entry["name"]: entry for entry in list_models(store)}
    assert set(names) == {"vision/digits", "plain.onnx"}
    assert names["plain.onnx"]["bytes"] == (store / "plain.onnx").stat().st_size
    assert {m["precision"] for m in names["vision/digits"]["models"]} == {"fp32", "int8"}


def test_links_out_of_the_store_are_neither_listed_nor_followed(store: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"not yours" * 100)
    os.symlink(outside, store / "leak.onnx")
    os.symlink("/etc/passwd", store / "passwd.tflite")
    os.symlink(store / "plain.onnx", store / "alias.onnx")  # a link inside the store is fine
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "manifest.json").write_text('{"name": "evil", "models": []}')
    os.symlink(tmp_path / "elsewhere", store / "evil")
    names = {entry["name"] for entry in list_models(store)}
    assert names == {"vision/digits", "plain.onnx", "alias.onnx"}
    with pytest.raises(ProtocolError, match="outside the model store") as refused:
        resolve_model(store, "leak.onnx")
    assert refused.value.code == "bad_model_name"
    assert resolve_model(store, "alias.onnx") == (store / "plain.onnx").resolve()
    with pytest.raises(ModelNotFoundError):
        resolve_model(store, "missing.onnx")


def test_deploy_leftovers_go_and_nothing_else(store: Path) -> None:
    (store / f"{WORK_PREFIX}crashed").mkdir()
    (store / f"{WORK_PREFIX}crashed" / "archive").write_bytes(b"x" * 1000)
    remove_leftovers(store)
    assert sorted(p.name for p in store.iterdir()) == ["plain.onnx", "vision"]
