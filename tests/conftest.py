"""Shared fixtures: the bundled models and scratch copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def digits() -> Path:
    return MODELS / "digits"


@pytest.fixture(scope="session")
def mobilenet() -> Path:
    return MODELS / "mobilenet_v2"


@pytest.fixture
def digits_copy(tmp_path: Path, digits: Path) -> Path:
    """A scratch copy of the digits bundle that a test may corrupt."""
    target = tmp_path / "digits"
    shutil.copytree(digits, target)
    return target


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep quantized models, engines, peaks and decisions the tests make out of the user's ~/.cache;
    subprocesses (the CLI, the daemon, workers) inherit the variable."""
    import os

    os.environ["EDGE_AGENT_CACHE_DIR"] = str(tmp_path_factory.mktemp("edge-agent-cache"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Keep each phase's report on the test item (`item.report_call`), so a fixture can tell that its test failed
    (the dashboard's browser then saves a screenshot)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)
