"""`edge-agent fleet`: drive boards over MQTT (`send`, `watch`: agent/fleet/client.py) and read the
coordinator's store through its HTTP API (`boards`, `results`, `compare-boards`, `alerts`, `jobs`:
agent/fleet/http.py), from an operator's shell.

    edge-agent fleet send jetson-01 bench model=models/digits backend=tflite iterations=200
    edge-agent fleet send group:lab ping --timeout 10
    edge-agent fleet watch --duration 30
    edge-agent fleet boards                       # --api URL --token T; tables, or --json
    edge-agent fleet compare-boards SHA256

Broker settings come from `--config` (the [mqtt] section of an agent.toml-style file), then
EDGE_AGENT_MQTT_* variables, then these options. Argument values are JSON where they parse as JSON
(`iterations=200`, `backend=["tflite","onnxruntime"]`), text otherwise (`model=models/digits`).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

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
    send.add_argument("--report", action="store_true", help="print each result's whole report as JSON after its "
                                                            "summary")
    for parser in (send, watch):
        _connection_options(parser)
        parser.add_argument("--json", action="store_true", help="print each message as one JSON line")
    send.set_defaults(handler=run_send)
    watch.set_defaults(handler=run_watch)
    _api_actions(actions)


def _api_actions(actions: Any) -> None:
    """The actions that read the coordinator's HTTP API."""
    boards = actions.add_parser("boards", help="every board the coordinator knows: state, model, runtimes")
    results = actions.add_parser("results", help="results, newest first, with p50/p99/Top-1/stable")
    results.add_argument("--device", help="of one board")
    results.add_argument("--model", metavar="SHA256", help="of one model file")
    results.add_argument("--cmd", help="of one command (bench, eval, ...)")
    results.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    compare = actions.add_parser("compare-boards", help="one model across boards: each configuration's latest "
                                                        "measures, the spread, what select chose")
    compare.add_argument("model", metavar="SHA256", help="the model file's sha256")
    alerts = actions.add_parser("alerts", help="regression alerts and expected changes")
    alerts.add_argument("--state", choices=("open", "acknowledged", "noted"), help="only these")
    jobs = actions.add_parser("jobs", help="fleet jobs and each board's state")
    jobs.add_argument("id", nargs="?", help="one job, board by board")
    for parser, handler in ((boards, run_boards), (results, run_results), (compare, run_compare),
                            (alerts, run_alerts), (jobs, run_jobs)):
        group = parser.add_argument_group("coordinator")
        group.add_argument("--api", default=os.environ.get("EDGE_AGENT_FLEET_API"), metavar="URL",
                           help="the coordinator's API (default $EDGE_AGENT_FLEET_API or http://127.0.0.1:8470)")
        group.add_argument("--token", help="an API token (default $EDGE_AGENT_FLEET_TOKEN, then the local "
                                           "profile's token file)")
        group.add_argument("--token-file", metavar="FILE", help="a file holding the API token")
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        parser.set_defaults(handler=handler)


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
            _print(message, args.json, args.quiet, args.report)
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


def _print(message: Any, as_json: bool, quiet: bool, whole_report: bool = False) -> None:
    from agent.mqtt.protocol import encode

    if as_json:
        print(encode(message).decode("utf-8"), flush=True)
        return
    print(describe(message, quiet, whole_report), flush=True)


def describe(message: Any, quiet: bool = False, whole_report: bool = False) -> str:
    """One human line per message; a result is followed by one summary line per report (p50, p99, Top-1,
    stable) unless `quiet`, and by its whole report as JSON with `whole_report`."""
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
        line += "".join("\n  " + summary for summary in report_summaries(message.report))
    if message.report is not None and whole_report:
        line += "\n" + json.dumps(message.report, indent=2)
    return line


def report_summaries(report: Dict[str, Any]) -> List[str]:
    """One line per measurement report of a result: what ran, p50, p99, Top-1, stable (or why it failed)."""
    lines = []
    for item in report.get("reports") or []:
        if not isinstance(item, dict):
            continue
        backend, latency = item.get("backend") or {}, item.get("latency") or {}
        model = item.get("model") or {}
        label = f"{model.get('name', '?')} {backend.get('name', '?')}/{model.get('precision', '?')}"
        if item.get("status") != "ok":
            lines.append(f"{label}: failed: {(item.get('error') or {}).get('message', '?')}")
            continue
        top1 = (item.get("accuracy") or {}).get("top1")
        verdict = (latency.get("stability") or {}).get("verdict", "-")
        lines.append(f"{label}: p50 {_ms(latency.get('p50_ms'))}  p99 {_ms(latency.get('p99_ms'))}  "
                     f"top1 {'-' if top1 is None else f'{top1:.1%}'}  {verdict}")
    if not lines:
        lines = [", ".join(f"{key}: {json.dumps(value)[:60]}" for key, value in report.items())]
    return lines


def _ms(value: Any) -> str:
    return f"{value:.3g} ms" if isinstance(value, (int, float)) else "-"


def _api(args: argparse.Namespace) -> Any:
    from agent.fleet.http import DEFAULT_API, ApiClient, find_token

    return ApiClient(args.api or DEFAULT_API, find_token(args.token, args.token_file))


def _show(args: argparse.Namespace, answer: Any, rows: List[List[str]]) -> int:
    """The JSON answer with --json, else the table (or a line saying there is nothing)."""
    from agent.report import aligned

    if args.json:
        print(json.dumps(answer, indent=2))
    elif len(rows) == 1:
        print("(none)")
    else:
        print("\n".join(aligned(rows)))
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _when(value: Optional[str]) -> str:
    return "-" if not value else value.replace("T", " ")[:19]


def run_boards(args: argparse.Namespace) -> int:
    """`fleet boards`: one row per board."""
    answer = _api(args).request("GET", "/api/v1/boards")
    rows = [["device", "state", "last seen (UTC)", "board model", "jetpack", "cpu", "runtimes", "agent"]]
    for board in answer["boards"]:
        hardware = board["hardware"]
        runtimes = ", ".join(f"{r['name']} {r['version']}" for r in board["runtimes"] if r["available"])
        rows.append([board["device_id"], _cell(board["state"]), _when(board["last_seen"]),
                     _cell(hardware["board_model"]), _cell(hardware["jetpack"]), _cell(hardware["cpu_arch"]),
                     runtimes or "-", _cell(board["agent_version"])])
    return _show(args, answer, rows)


def run_results(args: argparse.Namespace) -> int:
    """`fleet results`: one row per measurement of each result."""
    answer = _api(args).request("GET", "/api/v1/results", {"device": args.device, "model": args.model,
                                                           "cmd": args.cmd, "limit": args.limit})
    rows = [["time (UTC)", "device", "cmd", "status", "command id", "model", "backend", "prec", "thr", "p50 ms",
             "p99 ms", "top1", "stable"]]
    for result in answer["results"]:
        head = [_when(result["ts"]), result["device_id"], result["cmd"], result["status"], result["command_id"]]
        for measured in result["measurements"] or [{}]:
            top1 = measured.get("top1")
            rows.append(head + [_cell(measured.get(key)) for key in ("model_name", "backend", "precision", "threads",
                                                                       "p50_ms", "p99_ms")]
                        + ["-" if top1 is None else f"{top1:.1%}", _cell(measured.get("stability"))])
    return _show(args, answer, rows)


def run_compare(args: argparse.Namespace) -> int:
    """`fleet compare-boards SHA256`: the cross-board table, then the spread and what select chose."""
    answer = _api(args).request("GET", "/api/v1/compare", {"model": args.model})
    rows = [["board model", "device", "backend", "prec", "thr", "runtime", "batch", "p50 ms", "p99 ms", "per s",
             "peak MB", "top1", "agree", "stable"]]
    for row in answer["rows"]:
        rows.append([_cell(row.get(key)) for key in ("board_model", "device_id", "backend", "precision", "threads",
                                                      "runtime_version", "batch", "p50_ms", "p99_ms",
                                                      "throughput_per_s", "peak_rss_mb", "top1", "top1_agreement",
                                                      "stability")])
    code = _show(args, answer, rows)
    if not args.json:
        for spread in answer["spread"]:
            print(f"spread {spread['board_model']} {spread['backend']}/{spread['precision']}: {spread['boards']} "
                  f"boards, p50 {spread['p50_min_ms']:.4g} / {spread['p50_median_ms']:.4g} / "
                  f"{spread['p50_max_ms']:.4g} ms (min / median / max)")
        for chosen in answer["selected"]:
            print(f"select on {chosen['device_id']} chose {chosen['backend']}/{chosen['precision']} "
                  f"({_cell(chosen['threads'])} threads), p50 {_cell(chosen['p50_ms'])} ms")
    return code


def run_alerts(args: argparse.Namespace) -> int:
    """`fleet alerts`: regressions and expected changes, newest first."""
    answer = _api(args).request("GET", "/api/v1/alerts", {"state": args.state})
    rows = [["id", "time (UTC)", "kind", "state", "device", "backend", "prec", "measure", "message"]]
    for alert in answer["alerts"]:
        rows.append([str(alert["id"]), _when(alert["created_at"]), alert["kind"], alert["state"], alert["device_id"],
                     _cell(alert["backend"]), _cell(alert["precision"]), alert["measure"], alert["message"]])
    return _show(args, answer, rows)


def run_jobs(args: argparse.Namespace) -> int:
    """`fleet jobs [ID]`: the jobs with their states' counts, or one job board by board."""
    client = _api(args)
    if args.id:
        job = client.request("GET", f"/api/v1/jobs/{_quote(args.id)}")
        rows = [["device", "state", "progress", "updated (UTC)", "result id", "detail"]]
        for board in job["boards"]:
            progress = board["progress"]
            rows.append([board["device_id"], board["state"], "-" if progress is None else f"{progress:.0%}",
                         _when(board["updated_at"]), _cell(board["result_id"]), _cell(board["detail"])])
        if not args.json:
            print(f"job {job['id']}: {job['cmd']} to {job['target']}, made {_when(job['created_at'])} by "
                  f"{job['created_by'] or '-'}, deadline {_when(job['deadline'])}")
        return _show(args, job, rows)
    answer = client.request("GET", "/api/v1/jobs")
    rows = [["job", "made (UTC)", "cmd", "target", "boards", "states"]]
    for job in answer["jobs"]:
        states = ", ".join(f"{state} {count}" for state, count in sorted(job["counts"].items()))
        rows.append([job["id"], _when(job["created_at"]), job["cmd"], job["target"], str(len(job["boards"])), states])
    return _show(args, answer, rows)


def _quote(text: str) -> str:
    """A path segment, escaped."""
    from urllib.parse import quote

    return quote(text, safe="")
