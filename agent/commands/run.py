"""`edge-agent run`: the agent as a service (docs/daemon.md); systemd starts it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from typing import Any

from agent.errors import UsageError


def register(commands: Any) -> None:
    """Add the `run` parser."""
    parser = commands.add_parser("run", help="serve MQTT commands as a daemon (systemd: edge-agent.service)")
    parser.add_argument("--config", default="/etc/edge-agent/agent.toml", metavar="FILE",
                        help="the settings file (default /etc/edge-agent/agent.toml); EDGE_AGENT_* variables "
                             "override it")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="what to log on stderr (the journal under systemd); default info")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load and check the settings, then serve until SIGTERM."""
    if importlib.util.find_spec("paho") is None:
        raise UsageError("edge-agent run needs paho-mqtt: pip install 'edge-agent[mqtt]'")
    from agent.config import load
    from agent.service.daemon import Daemon

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return Daemon(load(args.config)).run()
