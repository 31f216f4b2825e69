"""The CPU from `/proc/cpuinfo`: ARM core types per cluster and features, or the x86 model and flags.

Pure parsing: `parse_cpuinfo(text)` needs no filesystem, so captured cpuinfo of any board tests it.
`physical_cores` counts cores from sysfs topology (SMT siblings once), the default thread count's basis.
The ARM tables follow the MIDR implementer/part codes of the Linux kernel's
`arch/arm64/include/asm/cputype.h` and util-linux `lscpu-arm.c`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .sysfs import SysfsReader

ARM_IMPLEMENTERS = {"0x41": "ARM", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}

ARM_PARTS = {
    ("0x41", "0xb76"): "ARM1176", ("0x41", "0xc07"): "Cortex-A7", ("0x41", "0xc08"): "Cortex-A8",
    ("0x41", "0xc09"): "Cortex-A9", ("0x41", "0xc0f"): "Cortex-A15", ("0x41", "0xd01"): "Cortex-A32",
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd06"): "Cortex-A65", ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73", ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd0d"): "Cortex-A77", ("0x41", "0xd0e"): "Cortex-A76AE",
    ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd46"): "Cortex-A510", ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2", ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4a"): "Neoverse-E1",
    ("0x41", "0xd4b"): "Cortex-A78C", ("0x41", "0xd4d"): "Cortex-A715", ("0x41", "0xd4e"): "Cortex-X3",
    ("0x41", "0xd4f"): "Neoverse-V2", ("0x41", "0xd80"): "Cortex-A520", ("0x41", "0xd81"): "Cortex-A720",
    ("0x41", "0xd82"): "Cortex-X4", ("0x41", "0xd84"): "Neoverse-V3", ("0x41", "0xd8e"): "Neoverse-N3",
    ("0x4e", "0x000"): "Denver", ("0x4e", "0x003"): "Denver 2", ("0x4e", "0x004"): "Carmel",
}

ARM_FEATURES = ("asimd", "asimddp", "i8mm", "fp16", "bf16", "sve", "sve2", "sme")
"""Reported in this order. "fp16" means both scalar (fphp) and vector (asimdhp) half precision."""

X86_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)


@dataclass
class CpuCluster:
    """Consecutive processors with the same core type (one cluster of a big.LITTLE SoC)."""

    core: str
    implementer: str
    part: str
    count: int


@dataclass
class CpuInfo:
    """What /proc/cpuinfo says about the CPU. `features` lists only the ones that decide speed.

    `model` is the x86 "model name"; ARM cores are named per cluster instead.
    """

    arch: Optional[str] = None
    model: Optional[str] = None
    vendor: Optional[str] = None
    cores: Optional[int] = None
    clusters: List[CpuCluster] = field(default_factory=list)
    features: List[str] = field(default_factory=list)


def _processor_blocks(text: str) -> Tuple[List[Dict[str, str]], Dict[str, str]]:
    """Split cpuinfo into one dict per "processor" block and one dict of board-wide lines."""
    processors: List[Dict[str, str]] = []
    board: Dict[str, str] = {}
    current: Optional[Dict[str, str]] = None
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            current = None
            continue
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            current = {}
            processors.append(current)
        (current if current is not None else board)[key] = value
    return processors, board


def _arm_clusters(processors: List[Dict[str, str]]) -> List[CpuCluster]:
    """Group consecutive processors by (implementer, part)."""
    clusters: List[CpuCluster] = []
    for block in processors:
        implementer = block.get("CPU implementer", "").lower()
        part = block.get("CPU part", "").lower()
        if not implementer or not part:
            continue
        if clusters and (clusters[-1].implementer, clusters[-1].part) == (implementer, part):
            clusters[-1].count += 1
            continue
        core = ARM_PARTS.get((implementer, part), f"unknown ({implementer} part {part})")
        clusters.append(CpuCluster(core=core, implementer=implementer, part=part, count=1))
    return clusters


def _arm_features(flags: List[str]) -> List[str]:
    """The speed-relevant ARM features present in a "Features" line."""
    present = set(flags)
    if {"fphp", "asimdhp"} <= present:
        present.add("fp16")
    return [name for name in ARM_FEATURES if name in present]


def board_fields(text: str) -> Dict[str, str]:
    """The board-wide lines after the processor blocks ("Hardware", "Revision", "Model" on a Pi)."""
    return _processor_blocks(text)[1]


def parse_cpuinfo(text: str) -> CpuInfo:
    """Turn the text of /proc/cpuinfo into a `CpuInfo`; unknown layouts give empty fields."""
    processors = _processor_blocks(text)[0]
    if not processors:
        return CpuInfo()
    first = processors[0]
    if "CPU implementer" in first:
        architecture = first.get("CPU architecture", "")
        return CpuInfo(
            arch="aarch64" if architecture.startswith("8") or architecture.startswith("9") else "armv7l",
            vendor=ARM_IMPLEMENTERS.get(first["CPU implementer"].lower(), first["CPU implementer"]),
            cores=len(processors),
            clusters=_arm_clusters(processors),
            features=_arm_features(first.get("Features", "").split()),
        )
    if "vendor_id" in first or "flags" in first:
        flags = set(first.get("flags", "").split())
        return CpuInfo(
            arch="x86_64" if "lm" in flags else "i686",
            model=first.get("model name"),
            vendor=first.get("vendor_id"),
            cores=len(processors),
            features=[name for name in X86_FEATURES if name in flags],
        )
    return CpuInfo(cores=len(processors))


def describe_cpu(cpu: CpuInfo) -> Optional[str]:
    """A short phrase for summaries: "6x Cortex-A78AE", "4x Cortex-A55 + 4x Cortex-A76", a model name."""
    if cpu.clusters:
        return " + ".join(f"{cluster.count}x {cluster.core}" for cluster in cpu.clusters)
    if cpu.model and cpu.cores:
        return f"{cpu.model} ({cpu.cores} cores)"
    return cpu.model


def usable_cpus() -> List[int]:
    """The logical CPUs this process may run on (its affinity where the OS tells it, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: List[int], reader: Optional[SysfsReader] = None) -> int:
    """How many physical cores the logical CPUs `cpus` sit on: SMT siblings (same package and core id in
    sysfs topology) count once; a CPU whose topology is unreadable counts as a core of its own."""
    reader = reader if reader is not None else SysfsReader("/")
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        package, core = reader.read_int(base + "physical_package_id"), reader.read_int(base + "core_id")
        cores.add((package, core) if package is not None and core is not None else ("cpu", cpu))
    return max(1, len(cores))
