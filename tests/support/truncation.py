"""The shared check of the profiler on truncated model files, for every format's reader."""

from __future__ import annotations

from pathlib import Path

from agent.errors import ModelFormatError
from agent.profile.static import static_profile


def check_truncated_profile(whole: bytes, cut: int, part: Path) -> None:
    """Profile the first `cut` bytes of a model: either a `ModelFormatError` naming the file, or a
    profile in which every layer that could not be counted says why — never another exception."""
    part.write_bytes(whole[: cut % len(whole)])
    try:
        data = static_profile(part).to_dict()
    except ModelFormatError as error:
        assert part.name in str(error)
    else:
        assert all(row["note"] or row["macs"] is not None for row in data["layers"])
