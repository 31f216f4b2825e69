"""The board readings of a telemetry message: load, memory, temperatures, clocks, throttling, power.

The files are found once (`ThermalProbe`, the hwmon power sensors) and read at each tick, a few
dozen small reads. Throttling compares this tick's snapshot with the previous one through
`agent.device.telemetry.throttle_report`, so a clock cap or a Pi firmware flag that appears between
two ticks is reported at the second. Power: hwmon sensors that report it (`power*_input`, in
microwatts) or a voltage and a current (`in*_input` mV and `curr*_input` mA on the same channel,
as the INA3221 rail monitors of Jetson modules do under JetPack 5 and 6).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from agent.device.sysfs import SysfsReader
from agent.device.telemetry import ThermalProbe, ThermalSnapshot, read_memory_mb, throttle_report

_HWMON = "/sys/class/hwmon/hwmon[0-9]*"


class Readings:
    """Reads the board under `root` (a captured tree in tests)."""

    def __init__(self, root: str = "/") -> None:
        self.reader = SysfsReader(root)
        self.probe = ThermalProbe(self.reader)
        self.previous: Optional[ThermalSnapshot] = None
        self.power = self._power_sensors()

    def read(self) -> Dict[str, Any]:
        """One set of readings now."""
        snapshot = self.probe.snapshot()
        throttle = throttle_report(self.previous or snapshot, snapshot)
        self.previous = snapshot
        readings: Dict[str, Any] = {
            "load": self._load(),
            "memory_mb": self._memory(),
            "temperature_c": {zone.type: zone.temp_c for zone in snapshot.zones if zone.temp_c is not None},
            "max_temperature_c": snapshot.max_temp_c(),
            "cpu_mhz": {"mean": snapshot.mean_cur_mhz(), "max": snapshot.mean_max_mhz()},
            "throttled": throttle["throttled"],
            "throttle_reasons": throttle["throttle_reasons"],
        }
        power = self._read_power()
        if power:
            readings["power_w"] = power
        return readings

    def _load(self) -> Optional[List[float]]:
        text = self.reader.read_text("/proc/loadavg")
        try:
            return [float(part) for part in (text or "").split()[:3]] or None
        except ValueError:
            return None

    def _memory(self) -> Dict[str, Optional[float]]:
        return read_memory_mb(self.reader)

    def _power_sensors(self) -> List[Tuple[str, str, Optional[str]]]:
        """(label, first file, second file or None): power in µW, or voltage (mV) and current (mA)."""
        sensors: List[Tuple[str, str, Optional[str]]] = []
        for hwmon in self.reader.glob(_HWMON):
            name = self.reader.read_text(hwmon + "/name") or os.path.basename(hwmon)
            for power in self.reader.glob(hwmon + "/power[0-9]*_input"):
                channel = os.path.basename(power)[len("power"):-len("_input")]
                sensors.append((self._label(hwmon, name, "power", channel), power, None))
            for current in self.reader.glob(hwmon + "/curr[0-9]*_input"):
                channel = os.path.basename(current)[len("curr"):-len("_input")]
                voltage = f"{hwmon}/in{channel}_input"
                if self.reader.exists(voltage):
                    sensors.append((self._label(hwmon, name, "in", channel), voltage, current))
        return sensors

    def _label(self, hwmon: str, name: str, kind: str, channel: str) -> str:
        label = self.reader.read_text(f"{hwmon}/{kind}{channel}_label")
        return f"{name}:{label or kind + channel}"

    def _read_power(self) -> Dict[str, float]:
        found = {}
        for label, first, second in self.power:
            microwatts = self.reader.read_int(first)  # power*_input, or in*_input in mV
            if second is not None and microwatts is not None:
                milliamps = self.reader.read_int(second)
                microwatts = None if milliamps is None else microwatts * milliamps  # mV x mA = µW
            if microwatts is not None:
                found[label] = round(microwatts / 1e6, 3)
        return found
