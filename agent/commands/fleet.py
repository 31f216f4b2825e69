"""`edge-agent fleet send|watch`: drive boards over MQTT from an operator's shell (agent/fleet/client.py).

    edge-agent fleet send jetson-01 bench model=models/digits backend=tflite iterations=200
    edge-agent fleet send group:lab ping --timeout 10
    edge-agent fleet watch --duration 30

Broker settings come from `--config` (the [mqtt] section of an agent.toml-style file), then
EDGE_AGENT_MQTT_* variables, then these options. Argument values are JSON where they parse as JSON
(`iterations=200`, `backend=["tflite","onnxruntime"]`), text otherwise (`model=models/digits`).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from typing import Any, Dict, List, Sequence

from agent.errors import UsageError


def register(commands: Any) -> None:
    """Add `fleet send` and `fleet watch`."""
    fleet = commands.add_parser("fleet", help="send commands to boards over MQTT and follow their replies")
    actions = fleet.add_subparsers(dest="action", required=True, metavar="ACTION")
    send = actions.add_parser("send", help="send a command to DEVICE, group:GROUP or all; print the replies")
    send.add_argument("target", help="a device id, group:NAME, or all")
    send.add_argument("cmd", help="ping, info, models, deploy, bench, eval, cancel, ...")
    send.add_argument("args", nargs="*", metavar="KEY=VALUE", help="the command's arguments")
    send.add_argument("--id", help="the command id (default: a new random one); resend an id to retry safely")
    send.add_argument("--timeout", type=float, default=300.0, metavar="S",
                      help="give up after S seconds without every final answer (default 300)")
    send.add_argument("--settle", type=float, default=3.0, metavar="S",
                      help="for a group or all: wait S seconds for more boards after the last new one (default 3)")
    send.add_argument("--quiet", action="store_true", help="print the final reports only as one line each")
    watch = actions.add_parser("watch", help="print the boards' status and telemetry as they arrive")
    watch.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    watch.add_argument("--events", action="store_true", help="also print every command event and result")
    for parser in (send, watch):
        _connection_options(parser)
        parser.add_argument("--json", action="store_true", help="print each message as one JSON line")
    send.set_defaults(handler=run_send)
    watch.set_defaults(handler=run_watch)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker")
    group.add_argument("--config", metavar="FILE", help="read [mqtt] from this agent.toml-style file")
    group.add_argument("--host", help="broker host")
    group.add_argument("--port", type=int, help="broker port")
    group.add_argument("--tls", dest="tls", action="store_const", const=True, help="connect over TLS")
    group.add_argument("--no-tls", dest="tls", action="store_const", const=False, help="plain MQTT")
    group.add_argument("--ca-file", help="CA certificate that signed the broker's")
    group.add_argument("--username", help="broker user (e.g. dashboard)")
    group.add_argument("--password-file", help="file whose first line is the broker password")
    group.add_argument("--root", help="topic root (default edge)")


def _settings(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from agent.config import parse_section, read_toml

    document = read_toml(Path(args.config)) if args.config else {}
    mqtt = parse_section("mqtt", document.get("mqtt", {}), os.environ, args.config or "defaults")
    given = {"host": args.host, "port": args.port, "tls": args.tls, "root": args.root, "username": args.username,
             "ca_file": Path(args.ca_file) if args.ca_file else None,
             "password_file": Path(args.password_file) if args.password_file else None}
    return replace(mqtt, **{key: value for key, value in given.items() if value is not None})


def parse_args(pairs: Sequence[str]) -> Dict[str, Any]:
    """`KEY=VALUE` arguments: JSON values where they parse, text otherwise."""
    found: Dict[str, Any] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"arguments are KEY=VALUE, not {text!r}")
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


def run_send(args: argparse.Namespace) -> int:
    """Send, then print every reply until the final ones; exit 1 unless every board finished `done`."""
    from agent.errors import FleetError
    from agent.fleet.client import Coordinator
    from agent.mqtt.protocol import Result, new_command_id

    command_args = parse_args(args.args)
    single = not (args.target == "all" or args.target.startswith("group:"))
    statuses: List[str] = []
    mqtt = _settings(args)
    with Coordinator(mqtt, mqtt.username) as fleet:
        fleet.follow(args.target)
        command = fleet.send(args.target, args.cmd, command_args, args.id or new_command_id())
        if not args.json:
            print(f"sent {command.cmd} {command.id} to {args.target}", flush=True)
        for message in fleet.replies(command.id, single, args.timeout, args.settle):
            _print(message, args.json, args.quiet)
            if isinstance(message, Result) or getattr(message, "event", None) == "rejected":
                statuses.append(getattr(message, "status", "rejected"))
    bad = [status for status in statuses if status != "done"]
    if bad:
        raise FleetError(f"{len(bad)} of {len(statuses)} board(s) did not finish: {', '.join(sorted(set(bad)))}")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """Print status and telemetry until the duration is over (or Ctrl-C)."""
    from agent.fleet.client import Coordinator

    mqtt = _settings(args)
    with Coordinator(mqtt, mqtt.username) as fleet:
        for _, message in fleet.watch(args.duration, args.events):
            _print(message, args.json, quiet=True)
    return 0


def _print(message: Any, as_json: bool, quiet: bool) -> None:
    from agent.mqtt.protocol import encode

    if as_json:
        print(encode(message).decode("utf-8"), flush=True)
        return
    print(describe(message, quiet), flush=True)


def describe(message: Any, quiet: bool = False) -> str:
    """One human line per message (a result's report follows as indented JSON unless `quiet`)."""
    kind = message.KIND
    if kind == "status":
        summary = (message.platform or {}).get("summary") or ""
        return f"{message.device:<20} {message.state:<9} v{message.version} {summary}"
    if kind == "telemetry":
        readings = message.readings
        memory = readings.get("memory_mb") or {}
        return (f"{message.device:<20} telemetry load {(readings.get('load') or ['-'])[0]} "
                f"mem {memory.get('available')}/{memory.get('total')} MB free "
                f"temp {readings.get('max_temperature_c')} C job {message.job or '-'}")
    if kind == "event":
        line = f"{message.device:<20} {message.event:<11} {message.cmd or ''} {message.command_id or ''}"
        if message.progress is not None:
            detail = message.detail or {}
            line += f" {message.progress:.0%} {detail.get('config', '')} {detail.get('phase', '')}"
        if message.code:
            line += f" [{message.code}] {message.message}"
        return line
    line = f"{message.device:<20} result {message.status} {message.cmd} {message.command_id}"
    if message.code:
        line += f" [{message.code}] {message.message}"
    if message.report is not None and not quiet:
        line += "\n" + json.dumps(message.report, indent=2)
    return line
