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
    parser.add_argument("--config", metavar="FILE",
                        help="the settings file (default /etc/edge-agent/agent.toml, none with --local); "
                             "EDGE_AGENT_* variables override it")
    parser.add_argument("--local", action="store_true",
                        help="the local profile: a broker on 127.0.0.1:1883 without TLS, state in "
                             "~/.local/state/edge-agent, the checkout's models/ (docs/daemon.md)")
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
    path = args.config or (None if args.local else "/etc/edge-agent/agent.toml")
    return Daemon(load(path, profile="local" if args.local else None)).run()
