"""`edge-agent coordinator`: the fleet's coordinator as a service (docs/coordinator.md); systemd starts it.

    edge-agent coordinator --config /etc/edge-agent/coordinator.toml
    edge-agent coordinator --new-token ops --role operator     # a token, and its [[api.tokens]] block
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import secrets
import sys
from typing import Any

from agent.commands.args import service_options, settings_path
from agent.errors import UsageError

CONFIG = "/etc/edge-agent/coordinator.toml"

NEEDED = ("sqlalchemy", "alembic", "fastapi", "uvicorn", "prometheus_client", "paho", "jinja2")


def register(commands: Any) -> None:
    """Add the `coordinator` parser."""
    parser = commands.add_parser("coordinator", help="keep the fleet's results, compare boards, watch for "
                                                     "regressions, serve the fleet API (coordinator.service)")
    service_options(parser, CONFIG, "EDGE_COORDINATOR_*", "a broker on 127.0.0.1:1883 without TLS, the database "
                    "and an operator token in ~/.local/state/edge-agent-coordinator (docs/coordinator.md)")
    parser.add_argument("--new-token", metavar="NAME",
                        help="print a new API token and the [[api.tokens]] block (its SHA-256) for the config, "
                             "then exit")
    parser.add_argument("--role", default="read", choices=("read", "operator"),
                        help="with --new-token: what the token may do (default read)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Make a token, or load and check the settings and serve until SIGTERM."""
    if args.new_token:
        return _new_token(args.new_token, args.role)
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"edge-agent coordinator needs {', '.join(missing)}: pip install 'edge-agent[coordinator]' "
                         "(Python >= 3.10)")
    from agent.fleet.service import CoordinatorService
    from agent.fleet.settings import load

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return CoordinatorService(load(settings_path(args, CONFIG), profile="local" if args.local else None)).run()


def _new_token(name: str, role: str) -> int:
    """Print a fresh token (shown once) and the config block that stores only its hash."""
    from agent.fleet.settings import hash_token

    token = secrets.token_urlsafe(32)
    print(f"token (give it to its user; it is not stored anywhere): {token}", file=sys.stderr)
    print(f'[[api.tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"')
    return 0
