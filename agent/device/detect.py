"""What board this is: `detect_device()` reads it once into a `DeviceInfo`; `device_fingerprint()` keys it;
`device_section()` is both as a `DeviceSection`, the board as reports, jobs and stored decisions carry it.

All reads go through a `SysfsReader`, so the same code describes the live machine (root "/") and
the captured trees of real boards under `tests/fixtures/boards/`. Anything absent or unreadable
is None; a strange tree never raises. Only two values do not come from the tree: the Python of
the running interpreter (marked as such), and, for the live root alone, `platform.machine()`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .cpu import CpuCluster, CpuInfo, board_fields, describe_cpu, parse_cpuinfo
from .jetson import (
    JetsonInfo,
    PowerMode,
    is_jetson,
    read_cuda_version,
    read_jetson,
    read_packages,
    read_tensorrt_version,
)
from .sysfs import SysfsReader

KINDS = ("jetson", "raspberry-pi", "arm", "x86", "unknown")


@dataclass
class PythonInfo:
    """The interpreter running edge-agent; never read from the board tree."""

    version: str
    implementation: str
    source: str = "running interpreter"


@dataclass
class DeviceInfo:
    """The board, as detected. `to_dict()` is its JSON form (documented in docs/device.md)."""

    kind: str
    summary: str
    model: Optional[str]
    compatible: List[str]
    machine: Optional[str]
    machine_source: Optional[str]
    cpu: CpuInfo
    memory_total_mib: Optional[int]
    os: Optional[str]
    kernel: Optional[str]
    cuda: Optional[str]
    tensorrt: Optional[str]
    gpu_count: int
    jetson: Optional[JetsonInfo]
    python: PythonInfo = field(default_factory=lambda: PythonInfo(platform.python_version(),
                                                                  platform.python_implementation()))

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def _os_release(reader: SysfsReader) -> Optional[str]:
    """PRETTY_NAME of /etc/os-release (or /usr/lib/os-release), unquoted."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        match = re.search(r"^PRETTY_NAME=(.*)$", reader.read_text(path) or "", re.MULTILINE)
        if match:
            return match.group(1).strip().strip("\"'") or None
    return None


def _kernel(reader: SysfsReader) -> Optional[str]:
    """The kernel release: /proc/sys/kernel/osrelease, else the third word of /proc/version."""
    release = reader.read_text("/proc/sys/kernel/osrelease")
    if release:
        return release.strip()
    words = (reader.read_text("/proc/version") or "").split()
    return words[2] if len(words) > 2 and words[0] == "Linux" else None


def _memory_total_mib(reader: SysfsReader) -> Optional[int]:
    """MemTotal of /proc/meminfo in MiB."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", reader.read_text("/proc/meminfo") or "", re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _gpu_count(reader: SysfsReader, jetson: Optional[JetsonInfo]) -> int:
    """CUDA-capable NVIDIA GPUs: a Jetson's integrated one, else the driver's /proc entries."""
    if jetson is not None:
        return jetson.gpu_count
    return len(reader.listdir("/proc/driver/nvidia/gpus"))


def _kind(model: Optional[str], compatible: List[str], machine: Optional[str], jetson: bool) -> str:
    """One of KINDS."""
    if jetson:
        return "jetson"
    if (model or "").startswith("Raspberry Pi") or any(entry.startswith("raspberrypi,") for entry in compatible):
        return "raspberry-pi"
    if machine and (machine.startswith("aarch64") or machine.startswith("arm")):
        return "arm"
    if machine in ("x86_64", "i686", "i386", "amd64", "AMD64"):
        return "x86"
    return "unknown"


def _summary(info: DeviceInfo) -> str:
    """One line a person can read: board, software stack, CPU, memory, OS."""
    parts: List[Optional[str]] = [info.model or (info.jetson.module if info.jetson else None)]
    if info.jetson is not None:
        if info.jetson.jetpack or info.jetson.l4t:
            parts.append("JetPack {} (L4T {})".format(info.jetson.jetpack or "?", info.jetson.l4t or "?"))
        if info.jetson.power_mode is not None:
            parts.append(f"power mode {info.jetson.power_mode.name or info.jetson.power_mode.id}")
    if info.cuda:
        parts.append("CUDA " + info.cuda)
    if info.tensorrt:
        parts.append("TensorRT " + info.tensorrt)
    parts.append(describe_cpu(info.cpu))
    if info.memory_total_mib is not None:
        parts.append(f"{info.memory_total_mib / 1024:.1f} GiB")
    parts.append(info.os)
    text = " | ".join(part for part in parts if part)
    return f"{info.kind}: {text}" if text else info.kind


def detect_device(reader: Optional[SysfsReader] = None) -> DeviceInfo:
    """Describe the board under `reader` (the live machine when None); never raises on odd trees."""
    reader = reader if reader is not None else SysfsReader("/")
    cpuinfo_text = reader.read_text("/proc/cpuinfo") or ""
    cpu = parse_cpuinfo(cpuinfo_text)
    compatible = [entry for entry in (reader.read_text("/proc/device-tree/compatible") or "").split("\x00") if entry]
    model = reader.read_text("/proc/device-tree/model") or board_fields(cpuinfo_text).get("Model") or None
    machine: Optional[str]
    machine_source: Optional[str]
    if reader.is_live:
        machine, machine_source = platform.machine() or None, "platform.machine()"
    else:
        machine, machine_source = cpu.arch, "cpuinfo" if cpu.arch else None
    packages = read_packages(reader)
    jetson = read_jetson(reader, compatible, packages) if is_jetson(reader, compatible) else None
    info = DeviceInfo(
        kind=_kind(model, compatible, machine, jetson is not None),
        summary="",
        model=model,
        compatible=compatible,
        machine=machine,
        machine_source=machine_source,
        cpu=cpu,
        memory_total_mib=_memory_total_mib(reader),
        os=_os_release(reader),
        kernel=_kernel(reader),
        cuda=read_cuda_version(reader),
        tensorrt=read_tensorrt_version(reader, packages),
        gpu_count=0,
        jetson=jetson,
    )
    info.gpu_count = _gpu_count(reader, jetson)
    info.summary = _summary(info)
    return info


def device_fingerprint(info: DeviceInfo) -> str:
    """16 hex digits that change exactly when something that decides inference speed changes.

    Covers the board model and module, SoC, CPU core types and count (x86: model name), the
    L4T/CUDA/TensorRT versions and the power mode; not the OS, kernel, memory or Python.
    """
    jetson = info.jetson
    key = {
        "kind": info.kind,
        "model": info.model,
        "module": jetson.part_number if jetson else None,
        "soc": jetson.soc if jetson else None,
        "cpu": [info.cpu.model, info.cpu.cores, [(cluster.core, cluster.count) for cluster in info.cpu.clusters]],
        "l4t": jetson.l4t if jetson else None,
        "cuda": info.cuda,
        "tensorrt": info.tensorrt,
        "power_mode": jetson.power_mode.id if jetson and jetson.power_mode else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


@dataclass
class DeviceSection:
    """The board as reports carry it (their `device`): everything detected, plus its fingerprint."""

    info: DeviceInfo
    fingerprint: str

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form: `DeviceInfo.to_dict()` with `fingerprint` last (docs/device.md)."""
        return dict(self.info.to_dict(), fingerprint=self.fingerprint)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceSection:
        """The section back from its JSON form, with the nested CPU, Jetson and Python parts typed again."""
        fields = {key: value for key, value in data.items() if key != "fingerprint"}
        cpu = dict(fields["cpu"], clusters=[CpuCluster(**cluster) for cluster in fields["cpu"]["clusters"]])
        jetson = fields["jetson"]
        if jetson is not None:
            power_mode = jetson["power_mode"]
            jetson = JetsonInfo(**dict(jetson, power_mode=None if power_mode is None else PowerMode(**power_mode)))
        info = DeviceInfo(**dict(fields, cpu=CpuInfo(**cpu), jetson=jetson, python=PythonInfo(**fields["python"])))
        return cls(info, data["fingerprint"])


def device_section(root: str = "/") -> DeviceSection:
    """The board under `root` (the live machine by default) as reports carry it."""
    info = detect_device(SysfsReader(root))
    return DeviceSection(info, device_fingerprint(info))
