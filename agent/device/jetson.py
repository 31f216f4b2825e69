"""NVIDIA's side of the board: the Jetson module, L4T and JetPack, CUDA, TensorRT, DLA, nvpmodel.

Every value comes from a file (through `SysfsReader`), never from running a tool, so a captured
tree of a real Jetson tests all of it. Tables are facts looked up once, with their sources:
- modules: the part numbers of NVIDIA's Jetson EEPROM layout docs (p<board>-<sku>),
- JetPack per L4T: NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive),
- CUDA compute capability per SoC: NVIDIA's CUDA GPUs list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

from .sysfs import SysfsReader

MODULES = {
    "p3767-0000": "Jetson Orin NX 16GB", "p3767-0001": "Jetson Orin NX 8GB",
    "p3767-0003": "Jetson Orin Nano 8GB", "p3767-0004": "Jetson Orin Nano 4GB",
    "p3767-0005": "Jetson Orin Nano 8GB (Developer Kit module)",
    "p3701-0000": "Jetson AGX Orin (Developer Kit module)", "p3701-0004": "Jetson AGX Orin 32GB",
    "p3701-0005": "Jetson AGX Orin 64GB", "p3701-0008": "Jetson AGX Orin Industrial",
    "p3668-0000": "Jetson Xavier NX (Developer Kit module)", "p3668-0001": "Jetson Xavier NX 8GB",
    "p3668-0003": "Jetson Xavier NX 16GB",
    "p2888-0001": "Jetson AGX Xavier 16GB", "p2888-0004": "Jetson AGX Xavier 32GB",
    "p2888-0005": "Jetson AGX Xavier 64GB", "p2888-0008": "Jetson AGX Xavier Industrial",
    "p3448-0000": "Jetson Nano (Developer Kit module)", "p3448-0002": "Jetson Nano 4GB (eMMC)",
    "p3448-0003": "Jetson Nano 2GB",
    "p3310-1000": "Jetson TX2", "p3489-0000": "Jetson TX2i", "p3489-0888": "Jetson TX2 4GB",
    "p3636-0001": "Jetson TX2 NX", "p2180-1000": "Jetson TX1",
}

SOCS = {"tegra234": ("Orin", "8.7"), "tegra194": ("Xavier", "7.2"), "tegra186": ("Parker", "6.2"),
        "tegra210": ("Tegra X1", "5.3")}
"""SoC -> (family, CUDA compute capability of its integrated GPU)."""

L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.5.2": "4.5.1",
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.2": "6.1 (rev. 1)", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
JETPACK_SERIES = {"32": "4.x", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}
"""For an L4T revision the table does not know: only the major series, never a guessed minor."""

_L4T_LINE = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_PART_NUMBER = re.compile(r"p\d{4}-\d{4}")
_TAG = re.compile(r"<\s*(POWER_MODEL|PM_CONFIG)\b([^>]*)>")
_TAG_ATTRIBUTE = re.compile(r"(\w+)\s*=\s*([^\s>]+)")
_DLA_PATTERNS = (
    "/sys/devices/platform/*/*.nvdla[0-9]",  # JetPack 5/6: .../13e10000.host1x/15880000.nvdla0
    "/sys/devices/platform/bus@0/*/*.nvdla[0-9]",  # JetPack 6 upstream-style bus node
    "/sys/devices/*/*.nvdla[0-9]",  # JetPack 4 (kernel 4.9): /sys/devices/13e10000.host1x/...
)
_TENSORRT_HEADERS = (
    "/usr/include/aarch64-linux-gnu/NvInferVersion.h", "/usr/include/x86_64-linux-gnu/NvInferVersion.h",
    "/usr/include/NvInferVersion.h",
)


@dataclass
class PowerMode:
    """The nvpmodel mode in force (`id`, `name`) and the configuration's default mode id."""

    id: int
    name: Optional[str]
    default_id: Optional[int]


@dataclass
class JetsonInfo:
    """What identifies a Jetson and its software stack; unknown values are None."""

    module: Optional[str]
    part_number: Optional[str]
    soc: Optional[str]
    soc_family: Optional[str]
    cuda_arch: Optional[str]
    l4t: Optional[str]
    jetpack: Optional[str]
    gpu_count: int
    dla_count: Optional[int]
    power_mode: Optional[PowerMode]


def is_jetson(reader: SysfsReader, compatible: List[str]) -> bool:
    """A Tegra SoC in the device tree, or an L4T release file."""
    return any(entry.startswith("nvidia,tegra") for entry in compatible) or reader.exists("/etc/nv_tegra_release")


def parse_l4t_release(text: str) -> Optional[str]:
    """"# R36 (release), REVISION: 4.3, ..." -> "36.4.3"; a one-number revision gets ".0"."""
    match = _L4T_LINE.search(text)
    if not match:
        return None
    revision = match.group(2) if "." in match.group(2) else match.group(2) + ".0"
    return f"{match.group(1)}.{revision}"


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    """The JetPack release of an L4T version, exact where known, else its series ("6.x")."""
    if not l4t:
        return None
    return L4T_TO_JETPACK.get(l4t) or JETPACK_SERIES.get(l4t.split(".")[0])


def parse_dpkg_status(text: str, wanted: Iterable[str]) -> Dict[str, str]:
    """Versions of the installed packages among `wanted` (names; a trailing "*" is a prefix)."""
    exact = {name for name in wanted if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in wanted if name.endswith("*"))
    versions: Dict[str, str] = {}
    stanza: Dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if line.strip():
            key, _, value = line.partition(":")
            if not line[0].isspace():
                stanza[key] = value.strip()
            continue
        name = stanza.get("Package", "")
        installed = stanza.get("Status", "").endswith(" installed")
        if installed and "Version" in stanza and (name in exact or (prefixes and name.startswith(prefixes))):
            versions[name] = stanza["Version"]
        stanza = {}
    return versions


def _upstream_version(dpkg_version: str) -> str:
    """"10.3.0.30-1+cuda12.5" -> "10.3.0.30"."""
    return dpkg_version.split(":")[-1].split("-")[0]


def read_cuda_version(reader: SysfsReader) -> Optional[str]:
    """The CUDA toolkit version from /usr/local/cuda/version.json (11.1+) or version.txt (older)."""
    text = reader.read_text("/usr/local/cuda/version.json")
    if text:
        try:
            version = json.loads(text).get("cuda", {}).get("version")
        except (ValueError, AttributeError):
            version = None
        if isinstance(version, str) and version:
            return version
    match = re.search(r"CUDA Version\s+(\S+)", reader.read_text("/usr/local/cuda/version.txt") or "")
    return match.group(1) if match else None


def _tensorrt_from_header(text: str) -> Optional[str]:
    """NV_TENSORRT_MAJOR/MINOR/PATCH/BUILD from NvInferVersion.h, following one level of #define."""
    defines: Dict[str, str] = dict(re.findall(r"#define\s+(\w+)\s+(\w+)", text))
    parts = []
    for name in ("NV_TENSORRT_MAJOR", "NV_TENSORRT_MINOR", "NV_TENSORRT_PATCH", "NV_TENSORRT_BUILD"):
        value = defines.get(name, "")
        value = defines.get(value, value)  # TensorRT 10: NV_TENSORRT_MAJOR -> TRT_MAJOR_ENTERPRISE
        if not value.isdigit():
            break
        parts.append(value)
    return ".".join(parts) if len(parts) >= 3 else None


def read_tensorrt_version(reader: SysfsReader, packages: Dict[str, str]) -> Optional[str]:
    """TensorRT from the dpkg database (tensorrt, else libnvinfer<N>), else NvInferVersion.h."""
    if "tensorrt" in packages:
        return _upstream_version(packages["tensorrt"])
    libraries = sorted((name for name in packages if re.fullmatch(r"libnvinfer\d+", name)),
                       key=lambda name: int(name[len("libnvinfer"):]))
    if libraries:
        return _upstream_version(packages[libraries[-1]])
    for header in _TENSORRT_HEADERS:
        version = _tensorrt_from_header(reader.read_text(header) or "")
        if version:
            return version
    return None


def read_packages(reader: SysfsReader) -> Dict[str, str]:
    """The installed versions of the packages this module looks at."""
    text = reader.read_text("/var/lib/dpkg/status") or ""
    return parse_dpkg_status(text, ("tensorrt", "libnvinfer*", "nvidia-l4t-core"))


def parse_power_mode(status: str, conf: str) -> Optional[PowerMode]:
    """The mode from nvpmodel's status ("pmode:0002") named by the POWER_MODEL lines of its conf."""
    match = re.search(r"pmode:\s*(\d+)", status)
    if not match:
        return None
    names: Dict[int, str] = {}
    default_id = None
    for tag, attributes in _TAG.findall(conf):
        values = dict(_TAG_ATTRIBUTE.findall(attributes))
        if tag == "POWER_MODEL" and values.get("ID", "").isdigit() and "NAME" in values:
            names[int(values["ID"])] = values["NAME"]
        elif tag == "PM_CONFIG" and values.get("DEFAULT", "").isdigit():
            default_id = int(values["DEFAULT"])
    mode_id = int(match.group(1))
    return PowerMode(id=mode_id, name=names.get(mode_id), default_id=default_id)


def count_dla(reader: SysfsReader) -> Optional[int]:
    """DLA engines the kernel created devices for (nvdla0, nvdla1); None without /sys/devices."""
    if not reader.exists("/sys/devices"):
        return None
    engines = {path.rsplit(".", 1)[-1] for pattern in _DLA_PATTERNS for path in reader.glob(pattern)}
    return len(engines)


def read_jetson(reader: SysfsReader, compatible: List[str], packages: Dict[str, str]) -> JetsonInfo:
    """Everything Jetson-specific, from the device tree, L4T files, nvpmodel and sysfs."""
    part_number = next((part for entry in compatible for part in _PART_NUMBER.findall(entry) if part in MODULES),
                       None)
    soc = next((entry.split(",", 1)[1] for entry in reversed(compatible) if entry.startswith("nvidia,tegra")), None)
    family, cuda_arch = SOCS.get(soc or "", (None, None))
    l4t = parse_l4t_release(reader.read_text("/etc/nv_tegra_release") or "")
    if l4t is None and "nvidia-l4t-core" in packages:
        l4t = _upstream_version(packages["nvidia-l4t-core"])
    return JetsonInfo(
        module=MODULES.get(part_number or ""),
        part_number=part_number,
        soc=soc,
        soc_family=family,
        cuda_arch=cuda_arch,
        l4t=l4t,
        jetpack=jetpack_for_l4t(l4t),
        gpu_count=1,
        dla_count=count_dla(reader),
        power_mode=parse_power_mode(reader.read_text("/var/lib/nvpmodel/status") or "",
                                    reader.read_text("/etc/nvpmodel.conf") or ""),
    )
