"""scripts/fleet_demo.py end to end (the script scripts/fleet-demo runs after installing): a real Mosquitto,
three real agents, the coordinator; the bench sent to all reaches done on every board, the results and the
cross-board table are printed, and `edge-agent fleet boards` then works with no options but the API's URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.broker import NEEDS_MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [NEEDS_MOSQUITTO]


def test_the_fleet_demo_runs_and_says_where_to_look(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    demo = subprocess.run([sys.executable, str(ROOT / "scripts" / "fleet_demo.py"), "--dir", str(tmp_path / "demo"),
                           "--exit"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "states: demo-orin done, demo-pi5 done, demo-x86 done" in out, out
    for device in ("demo-orin", "demo-pi5", "demo-x86"):
        assert out.count(device) >= 3, (device, out)  # the states, the results and the comparison
    assert "spread " in out and "where to look:" in out and "/metrics" in out
    assert (tmp_path / "xdg" / "edge-agent-coordinator" / "operator.token").is_file()
    assert (tmp_path / "demo" / "coordinator.db").is_file()
