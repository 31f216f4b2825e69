"""A cheap thermal snapshot taken before and after a measurement, and whether the board throttled.

`ThermalProbe` finds the files once (thermal zones, per-core cpufreq, the Raspberry Pi firmware's
throttle word) and `snapshot()` reads only those, so a snapshot costs a few dozen small reads.
`throttle_report(before, after)` compares two snapshots. `LoadProbe` reads what else the machine is
doing (load average, the whole machine's CPU time from /proc/stat) for the stability verdict.

Raspberry Pi firmware throttle word (`get_throttled`, as `vcgencmd get_throttled` prints it;
https://www.raspberrypi.com/documentation/computers/os.html#get_throttled). The kernel's
firmware driver exposes it as hex in sysfs, at /sys/devices/platform/soc/soc:firmware/get_throttled
on a Pi 4 and under soc@107c000000/soc@107c000000:firmware/ on a Pi 5.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .sysfs import SysfsReader

PI_THROTTLE_BITS = {
    0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit",
}
"""Bits 0-3 are the current state; bit N+16 says the same happened at some time since boot."""
PI_SINCE_BOOT_SHIFT = 16
PI_THROTTLE_PATTERN = "/sys/devices/platform/soc*/soc*:firmware/get_throttled"

NOT_DIE_SENSORS = frozenset({"PMIC-Die"})
"""Zones left out of the maximum: Tegra210/194's PMIC-Die reads a constant 100 degrees C."""
VALID_TEMPERATURE_C = (-40.0, 150.0)
"""Readings outside this are sentinels (Orin reports -256 C for a powered-down zone), not heat."""
FREQUENCY_DROP_FRACTION = 0.10


@dataclass
class ZoneTemperature:
    """One /sys/class/thermal zone: its `type` and temperature in degrees C (None if unreadable)."""

    zone: str
    type: str
    temp_c: Optional[float]


@dataclass
class CoreFrequency:
    """One CPU's clocks in MHz: current, the policy's cap (scaling_max) and the hardware maximum, and its
    cpufreq governor (None where unreadable)."""

    cpu: int
    cur_mhz: Optional[float]
    max_mhz: Optional[float]
    hw_max_mhz: Optional[float]
    governor: Optional[str] = None


@dataclass
class ThermalSnapshot:
    """Temperatures, clocks and the board's own throttle word at one moment."""

    monotonic_ns: int
    zones: List[ZoneTemperature] = field(default_factory=list)
    cores: List[CoreFrequency] = field(default_factory=list)
    pi_throttled: Optional[int] = None

    def max_temp_c(self) -> Optional[float]:
        """The hottest valid die sensor, in degrees C."""
        values = [zone.temp_c for zone in self.zones if zone.temp_c is not None and zone.type not in NOT_DIE_SENSORS]
        return max(values) if values else None

    def mean_cur_mhz(self) -> Optional[float]:
        """Mean current clock over the cores that report one."""
        return _mean([core.cur_mhz for core in self.cores])

    def mean_max_mhz(self) -> Optional[float]:
        """Mean hardware maximum clock (scaling_max where the hardware maximum is unreadable)."""
        return _mean([core.hw_max_mhz if core.hw_max_mhz is not None else core.max_mhz for core in self.cores])

    def governor(self) -> Optional[str]:
        """The cores' cpufreq governor(s), comma-separated when they differ; None where none is readable."""
        names = sorted({core.governor for core in self.cores if core.governor})
        return ",".join(names) if names else None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _mean(values: List[Optional[float]]) -> Optional[float]:
    """The mean of the known values to 0.1, or None when none is known."""
    present = [value for value in values if value is not None]
    return round(sum(present) / len(present), 1) if present else None


def _khz_to_mhz(value: Optional[int]) -> Optional[float]:
    """cpufreq's kHz as MHz; zero or negative means unknown."""
    return value / 1000.0 if value is not None and value > 0 else None


class ThermalProbe:
    """Finds a board's thermal and clock files once; `snapshot()` then reads just those."""

    def __init__(self, reader: Optional[SysfsReader] = None) -> None:
        self.reader = reader if reader is not None else SysfsReader("/")
        self.zones = [(path, self.reader.read_text(path + "/type") or path.rsplit("/", 1)[-1])
                      for path in self.reader.glob("/sys/class/thermal/thermal_zone[0-9]*")]
        self.cpus = [(int(path.rsplit("cpu", 1)[-1]), path + "/cpufreq")
                     for path in self.reader.glob("/sys/devices/system/cpu/cpu[0-9]*")
                     if path.rsplit("cpu", 1)[-1].isdigit() and self.reader.exists(path + "/cpufreq")]
        throttle_files = self.reader.glob(PI_THROTTLE_PATTERN)
        self.throttle_file = throttle_files[0] if throttle_files else None

    def _temperature(self, path: str) -> Optional[float]:
        millidegrees = self.reader.read_int(path + "/temp")
        if millidegrees is None:
            return None
        celsius = millidegrees / 1000.0
        return celsius if VALID_TEMPERATURE_C[0] <= celsius <= VALID_TEMPERATURE_C[1] else None

    def snapshot(self) -> ThermalSnapshot:
        """Read every temperature, clock and the throttle word now."""
        read_int = self.reader.read_int
        return ThermalSnapshot(
            monotonic_ns=time.monotonic_ns(),
            zones=[ZoneTemperature(path.rsplit("/", 1)[-1], kind, self._temperature(path))
                   for path, kind in self.zones],
            cores=[CoreFrequency(cpu, _khz_to_mhz(read_int(base + "/scaling_cur_freq")),
                                 _khz_to_mhz(read_int(base + "/scaling_max_freq")),
                                 _khz_to_mhz(read_int(base + "/cpuinfo_max_freq")),
                                 self.reader.read_text(base + "/scaling_governor")) for cpu, base in self.cpus],
            pi_throttled=read_int(self.throttle_file, 16) if self.throttle_file else None,
        )


def read_thermal(reader: Optional[SysfsReader] = None) -> ThermalSnapshot:
    """One snapshot of the board under `reader` (the live machine when None)."""
    return ThermalProbe(reader).snapshot()


def _pi_reasons(before: Optional[int], after: Optional[int]) -> List[str]:
    """What the Pi firmware says happened: bits set now, and since-boot bits that appeared since `before`."""
    if after is None:
        return []
    reasons = [f"{name} (now)" for bit, name in PI_THROTTLE_BITS.items() if after & (1 << bit)]
    earlier = before or 0
    for bit, name in PI_THROTTLE_BITS.items():
        mask = 1 << (bit + PI_SINCE_BOOT_SHIFT)
        if after & mask and not earlier & mask:
            reasons.append(f"{name} (occurred during the run)")
    return reasons


def _frequency_reasons(before: ThermalSnapshot, after: ThermalSnapshot) -> List[str]:
    """A mean clock that fell by more than 10% of the maximum, or a cap the kernel lowered."""
    reasons = []
    cur_before, cur_after, top = before.mean_cur_mhz(), after.mean_cur_mhz(), after.mean_max_mhz()
    if cur_before is not None and cur_after is not None and top:
        drop = cur_before - cur_after
        if drop > FREQUENCY_DROP_FRACTION * top:
            reasons.append(f"mean CPU clock fell {cur_before:.0f} -> {cur_after:.0f} MHz "
                           f"({drop / top:.0%} of the {top:.0f} MHz maximum)")
    caps_before = {core.cpu: core.max_mhz for core in before.cores if core.max_mhz is not None}
    lowered = [core for core in after.cores if core.max_mhz is not None and core.max_mhz < caps_before.get(core.cpu, 0)]
    if lowered:
        first = lowered[0]
        reasons.append(f"CPU clock cap lowered on {len(lowered)} core(s), "
                       f"e.g. cpu{first.cpu} {caps_before[first.cpu]:.0f} -> {first.max_mhz:.0f} MHz")
    return reasons


def _zone_label(zone: ZoneTemperature, zones: List[ZoneTemperature]) -> str:
    """The zone's type, with its zone name added when two zones share a type."""
    shared = sum(1 for other in zones if other.type == zone.type) > 1
    return f"{zone.type} ({zone.zone})" if shared else zone.type


def throttle_report(before: ThermalSnapshot, after: ThermalSnapshot) -> Dict[str, Any]:
    """Temperatures and clocks before/after a run and whether the board throttled, with reasons; `throttled`
    is None (unknown) where the board shows neither throttle flags nor core clocks to judge by."""
    after_by_zone = {zone.zone: zone for zone in after.zones}
    reasons = _pi_reasons(before.pi_throttled, after.pi_throttled) + _frequency_reasons(before, after)
    judged = after.pi_throttled is not None or None not in (before.mean_cur_mhz(), after.mean_cur_mhz())
    return {
        "temperature_c": {
            "before": before.max_temp_c(),
            "after": after.max_temp_c(),
            "zones": {
                _zone_label(zone, before.zones): {"before": zone.temp_c, "after": after_by_zone[zone.zone].temp_c}
                for zone in before.zones if zone.zone in after_by_zone
            },
        },
        "cpu_freq_mhz": {"before": before.mean_cur_mhz(), "after": after.mean_cur_mhz(), "max": after.mean_max_mhz()},
        "pi_throttled": {
            "before": None if before.pi_throttled is None else hex(before.pi_throttled),
            "after": None if after.pi_throttled is None else hex(after.pi_throttled),
        },
        "elapsed_s": (after.monotonic_ns - before.monotonic_ns) / 1e9,
        "throttled": bool(reasons) if judged else None,
        "throttle_reasons": reasons,
    }


@dataclass(frozen=True)
class LoadSnapshot:
    """What the whole machine is doing at one moment: the 1/5/15-minute load average, and the CPU time all
    CPUs together have spent since boot, busy (user, nice, system, irq, softirq) and stolen by a hypervisor,
    in seconds. None where the board does not expose it."""

    monotonic_ns: int
    load_average: Optional[Tuple[float, float, float]]
    busy_s: Optional[float]
    steal_s: Optional[float]


class LoadProbe:
    """Reads /proc/loadavg and the first line of /proc/stat (a few hundred bytes) per snapshot."""

    def __init__(self, reader: Optional[SysfsReader] = None) -> None:
        self.reader = reader if reader is not None else SysfsReader("/")
        self.ticks_per_s = os.sysconf("SC_CLK_TCK") if self.reader.is_live else 100  # USER_HZ

    def snapshot(self) -> LoadSnapshot:
        """Read the load average and the CPU time now."""
        fields = (self.reader.read_text("/proc/loadavg") or "").split()
        try:
            average: Optional[Tuple[float, float, float]] = (float(fields[0]), float(fields[1]), float(fields[2]))
        except (IndexError, ValueError):
            average = None
        busy = steal = None
        line = (self.reader.read_text("/proc/stat") or "").split("\n", 1)[0].split()
        if len(line) > 8 and line[0] == "cpu" and all(value.isdigit() for value in line[1:9]):
            user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(value) for value in line[1:9])
            busy = (user + nice + system + irq + softirq) / self.ticks_per_s
            steal = stolen / self.ticks_per_s
        return LoadSnapshot(time.monotonic_ns(), average, busy, steal)


def read_memory_mb(reader: SysfsReader) -> Dict[str, Optional[float]]:
    """The board's memory in MB from /proc/meminfo: `total`, and `available` (what can be had without
    swapping: free, reclaimable cache and buffers); None where the tree has no such line."""
    values: Dict[str, int] = {}
    for line in (reader.read_text("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB") and rest.split()[0].isdigit():
            values[key] = int(rest.split()[0])
    total, available = values.get("MemTotal"), values.get("MemAvailable")
    return {"total": None if total is None else round(total / 1024, 1),
            "available": None if available is None else round(available / 1024, 1)}
