"""`DeviceSection`, the board as reports carry it: one JSON form, read back typed, on every captured board."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.device.cpu import CpuCluster
from agent.device.detect import DeviceSection, PythonInfo, detect_device, device_fingerprint, device_section
from agent.device.jetson import PowerMode
from agent.device.sysfs import SysfsReader

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"
ROOTS = sorted(str(path) for path in BOARDS.iterdir() if path.is_dir()) + ["/"]


@pytest.mark.parametrize("root", ROOTS, ids=lambda root: Path(root).name or "live")
def test_a_section_reads_back_from_its_json_equal_and_typed(root: str) -> None:
    section = device_section(root)
    text = json.dumps(section.to_dict())
    back = DeviceSection.from_dict(json.loads(text))
    assert back == section
    assert json.dumps(back.to_dict()) == text
    assert isinstance(back.info.python, PythonInfo)
    assert all(isinstance(cluster, CpuCluster) for cluster in back.info.cpu.clusters)
    if back.info.jetson is not None and back.info.jetson.power_mode is not None:
        assert isinstance(back.info.jetson.power_mode, PowerMode)


@pytest.mark.parametrize("root", ROOTS, ids=lambda root: Path(root).name or "live")
def test_the_json_is_the_detected_board_with_its_fingerprint_last(root: str) -> None:
    info = detect_device(SysfsReader(root))
    data = device_section(root).to_dict()
    assert list(data) == list(info.to_dict()) + ["fingerprint"]
    assert data == dict(info.to_dict(), fingerprint=device_fingerprint(info))


def test_the_boards_cover_jetson_clusters_and_power_modes() -> None:
    sections = [device_section(root) for root in ROOTS]
    assert any(s.info.jetson is not None and s.info.jetson.power_mode is not None for s in sections)
    assert any(s.info.jetson is None for s in sections)
    assert any(len(s.info.cpu.clusters) > 0 for s in sections)
