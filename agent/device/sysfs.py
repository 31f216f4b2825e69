"""Every file the device package reads goes through a `SysfsReader` rooted at a filesystem root.

On the board the root is "/"; in tests it is a captured tree of a real board under
`tests/fixtures/boards/<board>/`. Callers always name board-absolute paths ("/proc/cpuinfo"),
the reader maps them under its root and never lets a path climb out of it. Nothing is cached:
two reads of a file that changed in between return the two contents.
"""

from __future__ import annotations

import glob as globlib
import os
import posixpath
import re
from typing import List, Optional, Union

MAX_READ_BYTES = 16 * 1024 * 1024
"""A dpkg status file on a full JetPack image is a few MB; nothing we read is larger."""

_NATURAL_SPLIT = re.compile(r"(\d+)")


def _natural_key(path: str) -> List[Union[int, str]]:
    """Sort "thermal_zone10" after "thermal_zone9", as a person would."""
    return [int(part) if part.isdigit() else part for part in _NATURAL_SPLIT.split(path)]


def _board_relative(path: str) -> str:
    """A board-absolute path made relative to the board's root, with ".." resolved inside it."""
    return posixpath.normpath("/" + path.replace(os.sep, "/")).lstrip("/")


class SysfsReader:
    """Reads files of one board's filesystem, given as board-absolute paths, under `root`."""

    def __init__(self, root: Union[str, os.PathLike[str]] = "/") -> None:
        self.root = os.path.abspath(os.fspath(root))

    @property
    def is_live(self) -> bool:
        """True when the root is this machine's own "/" (then the running system is the board)."""
        return self.root == os.path.abspath(os.sep)

    def host_path(self, path: str) -> str:
        """The path on this machine for a board-absolute `path`; ".." cannot leave the root."""
        relative = _board_relative(path)
        return os.path.join(self.root, relative) if relative else self.root

    def read_bytes(self, path: str, limit: int = MAX_READ_BYTES) -> Optional[bytes]:
        """The file's bytes (at most `limit`), or None if it is missing, unreadable or not a file."""
        try:
            with open(self.host_path(path), "rb") as handle:
                return handle.read(limit)
        except (OSError, ValueError):
            return None
        except TypeError:
            # Some Tegra thermal zones answer EAGAIN; Python's buffered reader then fails with
            # "can't concat NoneType to bytes" instead of raising OSError.
            return None

    def read_text(self, path: str) -> Optional[str]:
        """The file as text without trailing NULs and whitespace (device-tree strings end in NUL)."""
        data = self.read_bytes(path)
        if data is None:
            return None
        return data.decode("utf-8", errors="replace").rstrip("\x00 \t\r\n")

    def read_int(self, path: str, base: int = 10) -> Optional[int]:
        """The file's content as an integer in `base` ("0x" allowed for base 16), or None."""
        text = self.read_text(path)
        if text is None:
            return None
        try:
            return int(text.strip(), base)
        except ValueError:
            return None

    def exists(self, path: str) -> bool:
        """Whether the board path exists (file, directory or device node)."""
        return os.path.exists(self.host_path(path))

    def glob(self, pattern: str) -> List[str]:
        """Board-absolute paths matching a board-absolute glob `pattern`, in natural order."""
        host_pattern = os.path.join(globlib.escape(self.root), _board_relative(pattern))
        matches = ["/" + os.path.relpath(match, self.root).replace(os.sep, "/") for match in globlib.glob(host_pattern)]
        return sorted(matches, key=_natural_key)

    def listdir(self, path: str) -> List[str]:
        """Names in the board directory `path`, in natural order; [] when it cannot be listed."""
        try:
            return sorted(os.listdir(self.host_path(path)), key=_natural_key)
        except OSError:
            return []
