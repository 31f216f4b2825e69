"""The systemd units (the agent's and the coordinator's): `systemd-analyze verify` prints nothing, and each
sandbox scores under 4.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
UNIT = UNITS / "edge-agent.service"
COORDINATOR = UNITS / "edge-agent-coordinator.service"
EXEC_PATH = "/opt/edge-agent/venv/bin/edge-agent"
MAX_EXPOSURE = 4.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed")


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", [UNIT, COORDINATOR], ids=lambda unit: unit.stem)
def test_unit_verifies_without_a_single_warning(unit: Path, tmp_path: Path) -> None:
    """`verify` exits 0 even on unknown keys, so any line it prints fails the test. It also fails
    when ExecStart's program is missing, so the copy checked here points ExecStart at a stand-in
    executable; the path is the only difference from the shipped unit."""
    stand_in = tmp_path / "edge-agent"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = unit.read_text()
    assert text.count(f"ExecStart={EXEC_PATH} ") == 1
    copy = tmp_path / unit.name
    copy.write_text(text.replace(f"ExecStart={EXEC_PATH} ", f"ExecStart={stand_in} "))
    result = analyze("verify", str(copy))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


def test_verify_would_catch_a_bad_key(tmp_path: Path) -> None:
    """The check above can fail: the same verify run reports a misspelt directive."""
    broken = tmp_path / UNIT.name
    broken.write_text(UNIT.read_text().replace("ExecStart=", "ExecStart=/bin/true\nWatchdogSecs=5\n#", 1))
    result = analyze("verify", str(broken))
    assert "WatchdogSecs" in result.stdout + result.stderr


@pytest.mark.parametrize("unit", [UNIT, COORDINATOR], ids=lambda unit: unit.stem)
def test_sandbox_exposure_is_below_four(unit: Path) -> None:
    result = analyze("security", "--offline=true", str(unit))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    score = float(match.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score < MAX_EXPOSURE, output


def directives(unit: Path) -> Dict[str, List[str]]:
    """Every directive of a unit file and its values, in order."""
    settings: Dict[str, List[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_declares_what_the_service_relies_on() -> None:
    """Directives whose absence `verify` would not notice but the daemon depends on."""
    settings = directives(UNIT)
    expected = {"Type": "notify", "Restart": "on-failure", "User": "edge-agent", "StateDirectory": "edge-agent",
                "ConfigurationDirectory": "edge-agent", "ProtectSystem": "strict", "ProtectHome": "yes",
                "NoNewPrivileges": "yes", "PrivateTmp": "yes", "NotifyAccess": "main", "OOMPolicy": "continue",
                "MemoryAccounting": "yes"}
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert int(settings["WatchdogSec"][0]) > 0
    high, top = (int(settings[key][0].rstrip("%")) for key in ("MemoryHigh", "MemoryMax"))
    assert 0 < high < top < 100  # a share of the board's RAM, throttled before it is capped
    assert set(settings["SupplementaryGroups"][0].split()) == {"video", "render"}
    assert set(settings["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_coordinator_unit_declares_what_the_service_relies_on() -> None:
    """The coordinator notifies READY and WATCHDOG from its main process, runs as its own user with its
    own state folder, and has no device access."""
    settings = directives(COORDINATOR)
    expected = {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "User": "edge-coordinator",
                "StateDirectory": "edge-agent-coordinator", "ProtectSystem": "strict", "PrivateDevices": "yes",
                "NoNewPrivileges": "yes", "PrivateTmp": "yes"}
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert int(settings["WatchdogSec"][0]) > 0
    assert settings["ExecStart"][0].endswith("edge-agent coordinator --config /etc/edge-agent/coordinator.toml")
