"""Thermal snapshots and the throttle verdict, on captured board trees and on this machine.

The boards' sysfs cannot exist here, so captured trees (tests/fixtures/boards/*/README.md) stand in
for them; "throttled" variants are copies of a capture with the firmware word or the clocks changed.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from agent.device.sysfs import SysfsReader
from agent.device.telemetry import ThermalProbe, read_thermal, throttle_report

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"


def copy_board(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(BOARDS / name, root)
    return root


def set_clocks(root: Path, cur_khz: int, max_khz: int = 0) -> None:
    for cpufreq in (root / "sys/devices/system/cpu").glob("cpu*/cpufreq"):
        (cpufreq / "scaling_cur_freq").write_text(f"{cur_khz}\n")
        if max_khz:
            (cpufreq / "scaling_max_freq").write_text(f"{max_khz}\n")


@pytest.mark.parametrize("name, zones, max_c, cur_mhz, max_mhz", [
    ("jetson-orin-nano", 9, 48.2, 1728.0, 1728.0),
    ("jetson-xavier-nx", 6, 41.5, 1190.4, 1907.2),
    ("jetson-nano", 6, 41.5, 1479.0, 1479.0),
    ("raspberry-pi-5", 1, 52.35, 1500.0, 2400.0),
    ("raspberry-pi-4", 1, 47.712, 600.0, 1500.0),
])
def test_snapshot_of_each_board(name: str, zones: int, max_c: float, cur_mhz: float, max_mhz: float) -> None:
    snapshot = read_thermal(SysfsReader(BOARDS / name))
    assert len(snapshot.zones) == zones
    assert snapshot.max_temp_c() == max_c
    assert (snapshot.mean_cur_mhz(), snapshot.mean_max_mhz()) == (cur_mhz, max_mhz)
    json.dumps(snapshot.to_dict())


def test_unreadable_and_sentinel_zones_are_none_and_pmic_is_not_the_max(tmp_path: Path) -> None:
    """Orin's cv zones cannot be read; Nano's PMIC-Die always says 100 C; -256 C means powered down."""
    orin = read_thermal(SysfsReader(BOARDS / "jetson-orin-nano"))
    assert [z.type for z in orin.zones if z.temp_c is None] == ["cv0-thermal", "cv1-thermal", "cv2-thermal"]
    nano = read_thermal(SysfsReader(BOARDS / "jetson-nano"))
    assert [z.temp_c for z in nano.zones if z.type == "PMIC-Die"] == [100.0] and nano.max_temp_c() == 41.5
    root = copy_board(tmp_path, "jetson-orin-nano")
    (root / "sys/class/thermal/thermal_zone1/temp").write_text("-256000\n")
    assert read_thermal(SysfsReader(root)).zones[1].temp_c is None


def test_pi_firmware_word_is_read_on_both_pi_layouts() -> None:
    assert read_thermal(SysfsReader(BOARDS / "raspberry-pi-4")).pi_throttled == 0
    assert read_thermal(SysfsReader(BOARDS / "raspberry-pi-5")).pi_throttled == 0
    assert read_thermal(SysfsReader(BOARDS / "jetson-nano")).pi_throttled is None


def test_a_quiet_run_is_not_throttled() -> None:
    probe = ThermalProbe(SysfsReader(BOARDS / "raspberry-pi-5"))
    report = throttle_report(probe.snapshot(), probe.snapshot())
    assert report["throttled"] is False and report["throttle_reasons"] == []
    assert report["temperature_c"]["zones"] == {"cpu-thermal": {"before": 52.35, "after": 52.35}}
    assert report["cpu_freq_mhz"] == {"before": 1500.0, "after": 1500.0, "max": 2400.0}
    json.dumps(report)


def test_pi_under_voltage_and_throttling_during_the_run_are_reported(tmp_path: Path) -> None:
    root = copy_board(tmp_path, "raspberry-pi-4")
    probe = ThermalProbe(SysfsReader(root))
    before = probe.snapshot()
    (root / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("50005\n")
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("81234\n")
    report = throttle_report(before, probe.snapshot())
    assert report["throttled"] is True
    assert report["throttle_reasons"] == ["under-voltage (now)", "throttled (now)",
                                          "under-voltage (occurred during the run)",
                                          "throttled (occurred during the run)"]
    assert report["pi_throttled"] == {"before": "0x0", "after": "0x50005"}
    assert report["temperature_c"]["before"] == 47.712 and report["temperature_c"]["after"] == 81.234


def test_since_boot_bits_set_before_the_run_do_not_count(tmp_path: Path) -> None:
    root = copy_board(tmp_path, "raspberry-pi-5")
    throttle_file = root / "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"
    throttle_file.write_text("50000\n")
    probe = ThermalProbe(SysfsReader(root))
    report = throttle_report(probe.snapshot(), probe.snapshot())
    assert report["throttled"] is False
    throttle_file.write_text("d0008\n")
    report = throttle_report(read_thermal(SysfsReader(root)), probe.snapshot())
    assert report["throttle_reasons"] == ["soft temperature limit (now)"]


def test_a_clock_drop_over_ten_percent_of_max_is_throttling(tmp_path: Path) -> None:
    root = copy_board(tmp_path, "jetson-orin-nano")
    probe = ThermalProbe(SysfsReader(root))
    before = probe.snapshot()
    set_clocks(root, 1574400)  # 153.6 MHz lower: 8.9% of 1728 MHz
    assert throttle_report(before, probe.snapshot())["throttled"] is False
    set_clocks(root, 1190400)  # 537.6 MHz lower: 31% of 1728 MHz
    report = throttle_report(before, probe.snapshot())
    assert report["throttled"] is True and report["cpu_freq_mhz"]["after"] == 1190.4
    assert report["throttle_reasons"][0].startswith("mean CPU clock fell 1728 -> 1190 MHz (31% of")


def test_a_lowered_clock_cap_is_throttling(tmp_path: Path) -> None:
    """The kernel's cpufreq cooling lowers scaling_max_freq when a trip point is crossed."""
    root = copy_board(tmp_path, "jetson-xavier-nx")
    probe = ThermalProbe(SysfsReader(root))
    before = probe.snapshot()
    set_clocks(root, 1190400, max_khz=1190400)
    report = throttle_report(before, probe.snapshot())
    assert report["throttle_reasons"] == ["CPU clock cap lowered on 6 core(s), e.g. cpu0 1400 -> 1190 MHz"]


def best_of(runs: int, action: Callable[[], object]) -> float:
    """The fastest of `runs` timings in seconds, so a busy CI core does not fail the budget."""
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def test_snapshots_are_cheap_on_boards_and_on_this_machine() -> None:
    """The budget is 5 ms for a snapshot, probing included."""
    for reader in (SysfsReader(BOARDS / "jetson-orin-nano"), SysfsReader("/")):
        probe = ThermalProbe(reader)
        assert best_of(10, probe.snapshot) < 0.005
        assert best_of(5, functools.partial(read_thermal, reader)) < 0.005


def test_the_live_root_gives_a_serialisable_snapshot() -> None:
    snapshot = read_thermal()
    assert all(zone.temp_c is None or -40 <= zone.temp_c <= 150 for zone in snapshot.zones)
    report = throttle_report(snapshot, read_thermal())
    judged = snapshot.pi_throttled is not None or snapshot.mean_cur_mhz() is not None
    assert isinstance(report["throttled"], bool) if judged else report["throttled"] is None
    json.dumps(report)


def test_throttling_is_unknown_where_there_is_nothing_to_judge_it_by(tmp_path: Path) -> None:
    """A tree with neither throttle flags nor CPU clocks (a VM): throttled is None, not False."""
    (tmp_path / "proc").mkdir()
    probe = ThermalProbe(SysfsReader(tmp_path))
    report = throttle_report(probe.snapshot(), probe.snapshot())
    assert report["throttled"] is None and report["throttle_reasons"] == []
