"""Board detection against captured trees of real boards (tests/fixtures/boards/*/README.md).

The Jetson and Raspberry Pi trees stand in for boards that cannot exist on this machine; the
x86 tree was captured here, and the live root ("/") is this machine itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

import pytest

from agent.device.cpu import parse_cpuinfo
from agent.device.detect import KINDS, detect_device, device_fingerprint
from agent.device.jetson import jetpack_for_l4t, parse_dpkg_status, parse_l4t_release, parse_power_mode
from agent.device.sysfs import SysfsReader

BOARDS = Path(__file__).resolve().parents[1] / "fixtures" / "boards"

EXPECTED: Dict[str, Dict[str, Any]] = {
    "jetson-orin-nano": {
        "kind": "jetson", "model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
        "module": "Jetson Orin Nano 8GB (Developer Kit module)", "part_number": "p3767-0005", "soc": "tegra234",
        "l4t": "36.4.3", "jetpack": "6.2", "cuda": "12.6.68", "tensorrt": "10.3.0.30", "dla_count": 0,
        "power_mode": (2, "MAXN_SUPER"), "cores": [("Cortex-A78AE", 6)], "features": ["asimd", "asimddp", "fp16"],
        "memory_total_mib": 7454, "os": "Ubuntu 22.04.5 LTS", "kernel": "5.15.148-tegra", "gpu_count": 1,
    },
    "jetson-xavier-nx": {
        "kind": "jetson", "model": "NVIDIA Jetson Xavier NX Developer Kit", "module": "Jetson Xavier NX 8GB",
        "part_number": "p3668-0001", "soc": "tegra194", "l4t": "35.4.1", "jetpack": "5.1.2", "cuda": "11.4.19",
        "tensorrt": "8.5.2.2", "dla_count": 2, "power_mode": (2, "MODE_15W_6CORE"), "cores": [("Carmel", 6)],
        "features": ["asimd", "fp16"], "memory_total_mib": None, "os": "Ubuntu 20.04.6 LTS",
        "kernel": "5.10.120-tegra", "gpu_count": 1,
    },
    "jetson-nano": {
        "kind": "jetson", "model": "NVIDIA Jetson Nano Developer Kit", "module": "Jetson Nano (Developer Kit module)",
        "part_number": "p3448-0000", "soc": "tegra210", "l4t": "32.7.4", "jetpack": "4.6.4", "cuda": "10.2.300",
        "tensorrt": "8.2.1.8", "dla_count": 0, "power_mode": (0, "MAXN"), "cores": [("Cortex-A57", 4)],
        "features": ["asimd"], "memory_total_mib": None, "os": "Ubuntu 18.04.6 LTS", "kernel": "4.9.337-tegra",
        "gpu_count": 1,
    },
    "raspberry-pi-5": {
        "kind": "raspberry-pi", "model": "Raspberry Pi 5 Model B Rev 1.0", "cuda": None, "tensorrt": None,
        "cores": [("Cortex-A76", 4)], "features": ["asimd", "asimddp", "fp16"], "memory_total_mib": 8058,
        "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.6.51+rpt-rpi-2712", "gpu_count": 0,
    },
    "raspberry-pi-4": {
        "kind": "raspberry-pi", "model": "Raspberry Pi 4 Model B Rev 1.4", "cuda": None, "tensorrt": None,
        "cores": [("Cortex-A72", 4)], "features": ["asimd"], "memory_total_mib": 7811,
        "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.6.51+rpt-rpi-v8", "gpu_count": 0,
    },
}


def board(name: str) -> SysfsReader:
    return SysfsReader(BOARDS / name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_captured_board_is_described_with_its_real_values(name: str) -> None:
    expected = EXPECTED[name]
    info = detect_device(board(name))
    assert info.kind == expected["kind"]
    assert info.model == expected["model"]
    assert (info.cuda, info.tensorrt, info.gpu_count) == (expected["cuda"], expected["tensorrt"], expected["gpu_count"])
    assert [(cluster.core, cluster.count) for cluster in info.cpu.clusters] == expected["cores"]
    assert info.cpu.features == expected["features"]
    assert (info.memory_total_mib, info.os, info.kernel) == (expected["memory_total_mib"], expected["os"],
                                                             expected["kernel"])
    assert (info.machine, info.machine_source) == ("aarch64", "cpuinfo")
    if info.kind != "jetson":
        assert info.jetson is None
        return
    jetson = info.jetson
    assert jetson is not None and jetson.power_mode is not None
    assert (jetson.module, jetson.part_number, jetson.soc) == (expected["module"], expected["part_number"],
                                                              expected["soc"])
    assert (jetson.l4t, jetson.jetpack, jetson.dla_count) == (expected["l4t"], expected["jetpack"],
                                                             expected["dla_count"])
    assert (jetson.power_mode.id, jetson.power_mode.name) == expected["power_mode"]


def test_x86_host_capture_reports_model_and_vector_flags() -> None:
    """The x86 tree was captured on this dev machine (a Xeon with AVX-512 VNNI and AMX)."""
    info = detect_device(board("x86-host"))
    assert (info.kind, info.machine, info.cpu.model) == ("x86", "x86_64", "Intel(R) Xeon(R) Processor")
    assert info.cpu.cores == 2 and info.cpu.vendor == "GenuineIntel"
    assert {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"} <= set(info.cpu.features)
    assert info.model is None and info.jetson is None and info.cuda is None


def test_summary_is_one_line_naming_the_board_stack_and_cpu() -> None:
    summary = detect_device(board("jetson-orin-nano")).summary
    assert "\n" not in summary
    for part in ("jetson:", "JetPack 6.2 (L4T 36.4.3)", "MAXN_SUPER", "CUDA 12.6.68", "TensorRT 10.3.0.30",
                 "6x Cortex-A78AE"):
        assert part in summary


def test_to_dict_is_json_and_marks_python_as_the_running_interpreter() -> None:
    data = json.loads(json.dumps(detect_device(board("jetson-xavier-nx")).to_dict()))
    assert data["jetson"]["power_mode"] == {"id": 2, "name": "MODE_15W_6CORE", "default_id": 2}
    assert data["python"]["source"] == "running interpreter"
    assert data["compatible"] == ["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"]
    assert data["cpu"]["clusters"] == [{"core": "Carmel", "implementer": "0x4e", "part": "0x004", "count": 6}]


def test_an_empty_tree_gives_none_fields_not_exceptions(tmp_path: Path) -> None:
    info = detect_device(SysfsReader(tmp_path))
    assert info.kind == "unknown" and info.summary == "unknown"
    assert (info.model, info.machine, info.memory_total_mib, info.os, info.kernel) == (None,) * 5
    assert (info.cuda, info.tensorrt, info.jetson, info.gpu_count) == (None, None, None, 0)
    assert info.cpu.cores is None and info.cpu.clusters == []


def test_a_broken_jetson_tree_still_detects_what_is_readable(tmp_path: Path) -> None:
    """Garbage in every file, directories where files belong: fields go None, nothing raises."""
    root = tmp_path / "broken"
    shutil.copytree(BOARDS / "jetson-orin-nano", root)
    (root / "proc/cpuinfo").write_bytes(b"\xff\xfe garbage \x00 without colons\n")
    (root / "usr/local/cuda/version.json").write_text("{not json")
    (root / "var/lib/dpkg/status").write_text(
        "Package: tensorrt\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: nvidia-l4t-core\nStatus: install ok installed\nVersion: 36.4.3-20250107174145\n")
    (root / "etc/nv_tegra_release").write_text("R36 but no revision\n")
    (root / "var/lib/nvpmodel/status").write_text("pmode:garbage\n")
    (root / "proc/meminfo").unlink()
    (root / "proc/meminfo").mkdir()
    info = detect_device(SysfsReader(root))
    assert info.kind == "jetson" and info.jetson is not None
    assert (info.cuda, info.tensorrt, info.memory_total_mib) == (None, None, None)
    assert (info.jetson.l4t, info.jetson.jetpack, info.jetson.power_mode) == ("36.4.3", "6.2", None), \
        "L4T falls back to the nvidia-l4t-core package version"
    assert info.cpu.clusters == [] and info.jetson.module == "Jetson Orin Nano 8GB (Developer Kit module)"


def test_the_live_root_describes_this_machine() -> None:
    info = detect_device()
    assert info.kind in KINDS and info.kind != "unknown"
    assert info.machine_source == "platform.machine()" and info.machine
    assert info.cpu.cores is not None and info.cpu.cores >= 1
    assert info.memory_total_mib is not None and info.memory_total_mib > 0
    json.dumps(info.to_dict())


def test_fingerprint_is_stable_and_follows_the_power_mode(tmp_path: Path) -> None:
    first = device_fingerprint(detect_device(board("jetson-orin-nano")))
    assert first == device_fingerprint(detect_device(board("jetson-orin-nano")))
    assert len(first) == 16 and int(first, 16) >= 0
    root = tmp_path / "orin"
    shutil.copytree(BOARDS / "jetson-orin-nano", root)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0000\n")
    assert device_fingerprint(detect_device(SysfsReader(root))) != first
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002\n")
    (root / "etc/os-release").write_text('PRETTY_NAME="Something else"\n')
    assert device_fingerprint(detect_device(SysfsReader(root))) == first, "the OS name does not decide speed"
    fingerprints = {device_fingerprint(detect_device(board(name))) for name in EXPECTED}
    assert len(fingerprints) == len(EXPECTED)


@pytest.mark.parametrize("l4t, jetpack", [("36.4.3", "6.2"), ("36.4.4", "6.2.1"), ("35.4.1", "5.1.2"),
                                          ("32.7.4", "4.6.4"), ("36.9.9", "6.x"), ("35.9.0", "5.x"),
                                          ("30.1.0", None), (None, None)])
def test_jetpack_is_exact_where_known_and_only_the_series_otherwise(l4t: str, jetpack: str) -> None:
    assert jetpack_for_l4t(l4t) == jetpack


def test_l4t_release_line_parsing() -> None:
    assert parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == "35.4.1"
    assert parse_l4t_release("# R32 (release), REVISION: 5, GCID: 1") == "32.5.0"
    assert parse_l4t_release("nothing here") is None


def test_dpkg_status_keeps_only_installed_wanted_packages() -> None:
    text = ("Package: libnvinfer10\nStatus: install ok installed\nVersion: 10.3.0.30-1+cuda12.5\n"
            "Description: x\n continuation: not a field\n\n"
            "Package: libnvinfer8\nStatus: deinstall ok config-files\nVersion: 8.6.2.3-1+cuda12.2\n\n"
            "Package: other\nStatus: install ok installed\nVersion: 1\n")
    assert parse_dpkg_status(text, ("tensorrt", "libnvinfer*")) == {"libnvinfer10": "10.3.0.30-1+cuda12.5"}


def test_power_mode_tolerates_attribute_order_and_unknown_ids() -> None:
    conf = "< POWER_MODEL NAME=MAXN ID=0 >\n< PM_CONFIG DEFAULT=0 >\n"
    mode = parse_power_mode("pmode:0000 fmode:quiet", conf)
    assert mode is not None and (mode.id, mode.name, mode.default_id) == (0, "MAXN", 0)
    unknown = parse_power_mode("pmode:0009", conf)
    assert unknown is not None and (unknown.id, unknown.name) == (9, None)
    assert parse_power_mode("", conf) is None


def test_big_little_arm_cores_are_grouped_per_cluster() -> None:
    little = "processor\t: {}\nFeatures\t: fp asimd asimddp i8mm bf16 sve\nCPU implementer\t: 0x41\n" \
             "CPU architecture: 8\nCPU part\t: 0xd05\n"
    big = "processor\t: {}\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0b\n"
    text = "\n".join([little.format(i) for i in range(4)] + [big.format(i) for i in range(4, 8)])
    cpu = parse_cpuinfo(text)
    assert [(c.core, c.count) for c in cpu.clusters] == [("Cortex-A55", 4), ("Cortex-A76", 4)]
    assert cpu.features == ["asimd", "asimddp", "i8mm", "bf16", "sve"] and cpu.cores == 8


def test_reader_strips_nul_and_cannot_leave_its_root(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "model").write_bytes(b"Board\x00\n")
    (tmp_path / "secret").write_text("outside")
    reader = SysfsReader(tmp_path / "inside")
    assert reader.read_text("/model") == "Board"
    assert reader.read_text("/../secret") is None and reader.read_text("../../secret") is None
    assert reader.host_path("/../../etc/passwd") == str(tmp_path / "inside" / "etc" / "passwd")
    assert reader.read_int("/model") is None and reader.read_text("/missing") is None
    assert not reader.is_live and SysfsReader("/").is_live


def test_reader_glob_returns_board_absolute_paths_in_natural_order() -> None:
    reader = board("jetson-orin-nano")
    zones = reader.glob("/sys/class/thermal/thermal_zone*")
    assert zones[0] == "/sys/class/thermal/thermal_zone0" and zones[-1] == "/sys/class/thermal/thermal_zone8"
    assert reader.listdir("/proc/device-tree") == ["compatible", "model"]
    assert reader.listdir("/no/such/dir") == []
