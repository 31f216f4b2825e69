"""The cache folder: the environment variable, XDG, the home default, and a folder that cannot be made."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cache import CACHE_ENV, cache_dir, cache_file
from agent.errors import AgentError


def test_the_environment_variable_wins_and_the_folder_is_created(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "deep" / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "deep" / "cache" and cache_dir().is_dir()
    assert cache_file("peaks.json") == tmp_path / "deep" / "cache" / "peaks.json"


def test_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edge-agent"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "edge-agent"


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(AgentError, match=f"cannot create the cache folder .*{CACHE_ENV}"):
        cache_dir()
