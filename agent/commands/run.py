"""`edge-agent run`: the agent as a service (docs/daemon.md); systemd starts it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from typing import Any

from agent.commands.args import service_options, settings_path
from agent.errors import UsageError

CONFIG = "/etc/edge-agent/agent.toml"


def register(commands: Any) -> None:
    """Add the `run` parser."""
    parser = commands.add_parser("run", help="serve MQTT commands as a daemon (systemd: edge-agent.service)")
    service_options(parser, CONFIG, "EDGE_AGENT_*", "a broker on 127.0.0.1:1883 without TLS, state in "
                    "~/.local/state/edge-agent, the checkout's models/ (docs/daemon.md)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load and check the settings, then serve until SIGTERM."""
    if importlib.util.find_spec("paho") is None:
        raise UsageError("edge-agent run needs paho-mqtt: pip install 'edge-agent[mqtt]'")
    from agent.config import load
    from agent.service.daemon import Daemon

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return Daemon(load(settings_path(args, CONFIG), profile="local" if args.local else None)).run()
