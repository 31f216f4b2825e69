"""The CPU's data caches as sysfs describes them: level, size and how many CPUs share each one.

Read from `/sys/devices/system/cpu/cpu0/cache/index*/` through a `SysfsReader`, so a captured tree of a
board works as the live one does. Instruction caches are left out; a board whose kernel exposes no
cache folders gives an empty list (the roofline then has DRAM's ceiling only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from agent.device.sysfs import SysfsReader

CACHE_ROOT = "/sys/devices/system/cpu/cpu0/cache"
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class CacheSpec:
    """One data (or unified) cache level as seen from CPU 0."""

    level: int
    size_bytes: int
    shared_cpus: int   # CPUs sharing one instance (1 for a private cache)


def parse_size(text: Optional[str]) -> Optional[int]:
    """Bytes of a sysfs cache size ("32K", "2048K", "1M", "512"); None when unreadable."""
    if not text:
        return None
    text = text.strip().upper()
    scale = _UNITS.get(text[-1], 1)
    digits = text[:-1] if text[-1] in _UNITS else text
    return int(digits) * scale if digits.isdigit() else None


def count_cpus(cpu_list: Optional[str]) -> int:
    """CPUs in a sysfs list such as "0-3,8" (at least 1)."""
    total = 0
    for part in (cpu_list or "").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            total += int(last) - int(first) + 1 if last.isdigit() else 1
    return max(total, 1)


def read_caches(reader: SysfsReader) -> List[CacheSpec]:
    """CPU 0's data and unified caches, one per level (the largest where a level has several), by level."""
    by_level: Dict[int, CacheSpec] = {}
    for folder in reader.glob(CACHE_ROOT + "/index*"):
        if (reader.read_text(folder + "/type") or "").lower() == "instruction":
            continue
        level = reader.read_int(folder + "/level")
        size = parse_size(reader.read_text(folder + "/size"))
        if level is None or not size:
            continue
        spec = CacheSpec(level, size, count_cpus(reader.read_text(folder + "/shared_cpu_list")))
        if level not in by_level or size > by_level[level].size_bytes:
            by_level[level] = spec
    return [by_level[level] for level in sorted(by_level)]
