"""scripts/install-service into a folder (DESTDIR): what it writes, with which modes, and that a
second run keeps the configuration. Users, groups and systemctl need a real board (root, systemd)
and are skipped in this mode; they are listed in docs/daemon.md's "verified" table."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-service"


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "--no-venv", *args], env={"PATH": "/usr/bin:/bin", "DESTDIR": str(destdir)},
                          capture_output=True, text=True, timeout=60)


def test_installs_the_unit_and_the_configuration_once(tmp_path: Path) -> None:
    first = install(tmp_path)
    assert first.returncode == 0, first.stderr
    unit = tmp_path / "etc" / "systemd" / "system" / "edge-agent.service"
    config = tmp_path / "etc" / "edge-agent" / "agent.toml"
    assert unit.read_text() == (ROOT / "systemd" / "edge-agent.service").read_text()
    assert config.read_text() == (ROOT / "deploy" / "agent.toml").read_text()
    assert (unit.stat().st_mode & 0o777, config.stat().st_mode & 0o777) == (0o644, 0o640)
    config.write_text("[mqtt]\nhost = 'mine'\n")
    second = install(tmp_path)
    assert second.returncode == 0, second.stderr
    assert config.read_text() == "[mqtt]\nhost = 'mine'\n" and "wrote" not in second.stderr


def test_refuses_unknown_options(tmp_path: Path) -> None:
    result = install(tmp_path, "--bogus")
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr
