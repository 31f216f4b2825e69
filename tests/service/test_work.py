"""How a job's memory limit is chosen (agent.service.work.memory_limit_mb): the configured one, `auto` from
the memory available now, and a command's own limit, which may lower it but never raise it."""

from __future__ import annotations

import pytest

from agent.device.sysfs import SysfsReader
from agent.device.telemetry import read_memory_mb
from agent.service import work


def test_a_command_may_lower_the_limit_never_raise_it() -> None:
    assert work.memory_limit_mb(2048) == 2048
    assert work.memory_limit_mb(2048, 512) == 512
    assert work.memory_limit_mb(2048, 8192) == 2048
    assert work.memory_limit_mb(0) is None  # none configured
    assert work.memory_limit_mb(0, 700) == 700  # then the command's own is the only one


def test_auto_is_a_share_of_the_memory_available_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work, "gpu_device_node", lambda: None)
    available = read_memory_mb(SysfsReader("/"))["available"]
    assert available is not None
    limit = work.memory_limit_mb("auto")
    assert limit is not None and limit >= work.AUTO_MEMORY_FLOOR_MB
    expected = work.AUTO_MEMORY_SHARE * available
    assert limit == max(work.AUTO_MEMORY_FLOOR_MB, int(expected)) or abs(limit - expected) < 0.05 * expected
    assert work.memory_limit_mb("auto", 100) == 100


def test_auto_sets_no_limit_on_a_gpu_board(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test double for the GPU device node, which this machine has not: CUDA's address-space reservations
    break an RLIMIT_AS, so `auto` leaves the limit to the unit's MemoryMax there."""
    monkeypatch.setattr(work, "gpu_device_node", lambda: "/dev/nvhost-ctrl-gpu")
    assert work.memory_limit_mb("auto") is None
    assert work.memory_limit_mb("auto", 900) == 900
