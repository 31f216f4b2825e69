"""docs/schemas/ against what edge-agent really produces.

Every schema is a valid draft 2020-12 schema whose references resolve; the reports of a real `bench`,
`eval`, `profile` and `select` on models/digits, the stored decision, `info`, the device section of every
captured board, and every message a real daemon publishes to a real Mosquitto (and the commands sent to
it) validate; a broken document is rejected by each schema; and the drift checks say, field by field,
where the code and the schemas disagree. Objects whose shape is fixed are closed
(`additionalProperties` / `unevaluatedProperties: false`) and list every field as required, so a field the
code adds or drops fails validation; the few optional fields are listed in OPTIONAL with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import re
import time
import uuid
from collections import defaultdict
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from support.agent import QUICK_BENCH, AgentProcess, coordinator, no_stray_agents  # noqa: F401 (autouse fixture)
from support.broker import NEEDS_MOSQUITTO, Broker, mosquitto_binary
from support.cli import QUICK, run_cli
from support.faults import fault_env
from support.served import bundle_tar, publish, served_folder

from agent.device.cpu import CpuCluster, CpuInfo
from agent.device.detect import DeviceInfo, PythonInfo, device_section
from agent.device.jetson import JetsonInfo, PowerMode
from agent.device.telemetry import read_thermal, throttle_report
from agent.errors import ProtocolError
from agent.jobs.info import info
from agent.jobs.measure import run_measure
from agent.measure.latency import summarize
from agent.measure.messages import BackendRun, MemoryUse
from agent.measure.plan import MeasureRequest
from agent.mqtt.messages import MESSAGE_TYPES, schema_name
from agent.mqtt.protocol import Command, encode_command, parse_command
from agent.mqtt.schema import COMMANDS
from agent.selection.decision import Candidate
from agent.service.readings import Readings

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) is not installed")
referencing = pytest.importorskip("referencing", reason="jsonschema >= 4.18 (with referencing) is not installed")

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
BOARDS = sorted(path for path in (ROOT / "tests" / "fixtures" / "boards").iterdir() if path.is_dir())
Document = Dict[str, Any]

# Every property a schema does not require, with why: anything else a schema lists must be required.
OPTIONAL: Dict[str, Dict[str, str]] = {
    "report.schema.json#/$defs/onnxruntime_configuration": {"build": "only when the backend made the file"},
    "report.schema.json#/$defs/tensorrt_configuration": {"build": "only when the backend made the file"},
    "report.schema.json#/$defs/tensorrt_build": {"quantization": "int8_calibration qdq only"},
    "report.schema.json#/$defs/latency": {"device_compute": "TensorRT only"},
    "report.schema.json#/$defs/batch_latency": {"device_compute": "TensorRT only"},
    "report.schema.json#/$defs/fidelity/oneOf/1": {"samples": "absent when the reference run failed"},
    "selection.schema.json#/$defs/selection/properties/reference": {
        "label": "empty when no reference ran", "top1": "empty when no reference ran"},
    "selection.schema.json#/$defs/candidate/properties/fidelity/anyOf/2": {
        "samples": "absent when the reference run failed"},
    "telemetry.schema.json#/$defs/readings": {"power_w": "boards with hwmon power sensors only"},
    "event.schema.json#/$defs/detail": {
        name: "progress detail or replay marks" for name in
        ("config", "index", "phase", "batch", "done", "total", "duplicate", "forgotten")},
    "command.schema.json": {"schema": "optional in the envelope", "args": "defaults to {}"},
}
# The typed messages: their optional fields are those `encode` leaves out when None.
OPTIONAL.update({f"{kind}.schema.json": {item.name: "left out when None" for item in fields(cls)
                                         if item.default is not MISSING}
                 for kind, cls in MESSAGE_TYPES.items()})
for name, spec in COMMANDS.items():
    OPTIONAL[f"command.schema.json#/$defs/{name}_args"] = {
        arg: "an optional argument" for arg, rule in spec.args.items() if not rule.required}


def load_schemas() -> Dict[str, Document]:
    """Every docs/schemas/*.schema.json by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(SCHEMAS.glob("*.schema.json"))}


ALL = load_schemas()
REGISTRY = referencing.Registry().with_resources(
    (schema["$id"], referencing.Resource.from_contents(schema)) for schema in ALL.values())


def validator(where: str) -> Any:
    """A validator for `file.schema.json` or `file.schema.json#/json/pointer`."""
    name, _, pointer = where.partition("#")
    return jsonschema.Draft202012Validator({"$ref": ALL[name]["$id"] + ("#" + pointer if pointer else "")},
                                           registry=REGISTRY)


def _leaves(error: Any) -> List[Any]:
    """The errors that say what is wrong: inside anyOf/oneOf, those of the branch that fits best (not a
    branch of another type, such as the `null` of a nullable section)."""
    if not error.context:
        return [error]
    branches: Dict[Any, List[Any]] = defaultdict(list)
    for sub in error.context:
        branches[sub.relative_schema_path[0]].append(sub)
    typed = [errors for errors in branches.values()
             if not any(e.validator in ("type", "const") and not e.relative_path for e in errors)]
    best = min(typed or list(branches.values()), key=len)
    return [leaf for sub in best for leaf in _leaves(sub)]


def problems(where: str, document: Any) -> List[str]:
    """Why `document` does not fit the schema at `where`, one line per problem; drift (a field on one
    side only) is named as such."""
    found: List[str] = []
    for error in validator(where).iter_errors(document):
        for leaf in _leaves(error):
            at = leaf.json_path
            if leaf.validator in ("additionalProperties", "unevaluatedProperties"):
                extra = re.findall(r"'([^']*)'", leaf.message.partition("(")[2])
                found += [f"{where} at {at}: the code produces `{key}`, the schema does not list it "
                          "(add it to the schema)" for key in extra]
            elif leaf.validator == "required":
                missing = [key for key in leaf.validator_value if key not in leaf.instance]
                found += [f"{where} at {at}: the schema requires `{key}`, the code did not produce it "
                          "(drop it from the schema, or mark it optional in tests/test_schemas.py OPTIONAL)"
                          for key in missing]
            else:
                found.append(f"{where} at {at}: {leaf.message}")
    return sorted(set(found))


def assert_valid(where: str, *documents: Any) -> None:
    """Every document fits the schema at `where`; the failure lists every problem."""
    bad = sorted({line for document in documents for line in problems(where, document)})
    assert not bad, "\n".join(bad)


def object_schemas(node: Any, where: str) -> Iterator[Tuple[str, Document]]:
    """Every (location, subschema) under `node` that lists `properties`, in JSON-pointer form; not those
    of conditions (`if`/`then`/`else`), which narrow a shape defined elsewhere."""
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, item in value.items():
                    yield from object_schemas(item, f"{where}/{key}/{name}")
            elif key not in ("if", "then", "else", "const", "enum"):
                yield from object_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from object_schemas(item, f"{where}/{index}")


def _location(name: str, pointer: str) -> str:
    return name if not pointer else f"{name}#{pointer}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# (a) the schemas themselves

@pytest.mark.parametrize("name", sorted(ALL))
def test_each_schema_is_a_valid_2020_12_schema_whose_references_resolve(name: str) -> None:
    schema = ALL[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/" + name)
    resolver = REGISTRY.resolver(base_uri=schema["$id"])
    for ref in _refs(schema):
        resolver.lookup(ref)  # raises when a reference leads nowhere


def test_every_optional_field_is_optional_on_purpose() -> None:
    """Drift in the schemas themselves: a property a schema lists but does not require is in OPTIONAL, and
    each OPTIONAL entry is a property the schema really lists without requiring it."""
    optional: Dict[str, Set[str]] = {}
    for name, schema in ALL.items():
        for pointer, node in object_schemas(schema, ""):
            loose = set(node["properties"]) - set(node.get("required", ()))
            if loose:
                optional[_location(name, pointer)] = loose
    unexplained = [f"{where}: `{key}` is listed but not required (require it, or explain it in OPTIONAL)"
                   for where, keys in optional.items() for key in sorted(keys - set(OPTIONAL.get(where, {})))]
    stale = [f"{where}: OPTIONAL names `{key}`, which that schema does not list as an optional property"
             for where, keys in OPTIONAL.items() for key in sorted(set(keys) - optional.get(where, set()))]
    assert not unexplained + stale, "\n".join(unexplained + stale)


def test_the_readme_names_every_schema_file() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    assert [name for name in ALL if f"`{name}`" not in readme] == []


# (b) real outputs: the CLI

@pytest.fixture(scope="module")
def cli_reports(digits: Path) -> Dict[str, Any]:
    """The JSON of real runs on models/digits: bench (every backend, derived INT8, two batch sizes), eval,
    profile, a static profile, a configuration whose worker died, and select."""
    runs = {
        "bench": ("bench", "--backend", "onnxruntime,tflite", "--derive", "--batch", "1,4", *QUICK,
                  "--eval-limit", "20"),
        "eval": ("eval", "--eval-limit", "20"),
        "profile": ("profile", "--backend", "onnxruntime", "--precision", "fp32", *QUICK, "--eval-limit", "20"),
        "static": ("profile", "--static"),
        "select": ("select", "--backend", "tflite", "--threads", "1", "--eval-limit", "20", "--time-limit", "3"),
    }
    found: Dict[str, Any] = {}
    for key, (command, *args) in runs.items():
        result = run_cli(command, str(digits), *args, "--json")
        assert result.code == 0, result.stderr
        found[key] = result.json()
    with pytest.MonkeyPatch.context() as patch:  # the job function: the CLI prints no report when all fail
        for name, value in fault_env("exit").items():
            patch.setenv(name, value)
        crashed = run_measure(MeasureRequest(str(digits), backends=["tflite"], precisions=["fp32"], iterations=5,
                                             min_seconds=0), device_section())
    found["failed"] = [report.to_dict() for report in crashed]
    return found


def test_bench_eval_and_profile_reports_validate(cli_reports: Dict[str, Any]) -> None:
    reports = [r for key in ("bench", "eval", "profile", "static", "failed") for r in cli_reports[key]]
    assert {(r["kind"], r["status"]) for r in reports} == {
        ("bench", "ok"), ("eval", "ok"), ("profile", "ok"), ("bench", "failed")}
    derived = [r for r in cli_reports["bench"] if "build" in r["backend"]["configuration"]]
    assert derived and all(r["latency_by_batch"] for r in cli_reports["bench"] if r["backend"]["name"] == "onnxruntime")
    assert_valid("report.schema.json", *reports)


def test_select_report_and_stored_decision_validate(cli_reports: Dict[str, Any]) -> None:
    assert_valid("selection.schema.json", cli_reports["select"])
    stored = sorted((Path(os.environ["EDGE_AGENT_CACHE_DIR"]) / "select").glob("*.json"))
    assert stored
    assert_valid("selection.schema.json#/$defs/stored_decision", *(json.loads(p.read_text()) for p in stored))


def test_info_and_every_captured_board_validate() -> None:
    live = run_cli("info", "--json")
    assert live.code == 0, live.stderr
    assert_valid("info.schema.json", live.json(), *(info(str(board)) for board in BOARDS))
    sections = [device_section(str(board)).to_dict() for board in BOARDS]
    assert any(section["jetson"] and section["jetson"]["power_mode"] for section in sections)
    assert any(section["cpu"]["clusters"] for section in sections)
    assert_valid("device.schema.json", *sections)
    assert_valid("telemetry.schema.json#/$defs/readings", *(Readings(str(board)).read() for board in BOARDS))


# (b) real outputs: a daemon on a real broker

def wire_messages(fleet: Any, until: Callable[[str, Document], bool],
                  timeout: float = 60.0) -> List[Tuple[str, Document]]:
    """The messages the coordinator receives, as the JSON on the wire, up to the first that `until` accepts."""
    got: List[Tuple[str, Document]] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            topic, payload, _ = fleet.received.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            seen = [(topic, message.get("event") or message.get("state")) for topic, message in got
                    if not topic.endswith("/telemetry")]
            raise AssertionError(f"no message ended the wait within {timeout} s; got {seen}") from None
        got.append((topic, json.loads(payload)))
        if until(*got[-1]):
            return got


def _answer_to(command_id: Optional[str]) -> Callable[[str, Document], bool]:
    """Ends a wait at the command's result, or at its rejection."""
    return lambda topic, message: message.get("command_id") == command_id and (
        topic.endswith("/results") or message.get("event") == "rejected")


def _results_of(*command_ids: str) -> Callable[[str, Document], bool]:
    """Ends a wait once each of the commands has its result, in whatever order they come."""
    pending = set(command_ids)

    def seen_all(topic: str, message: Document) -> bool:
        if topic.endswith("/results"):
            pending.discard(message["command_id"])
        return not pending
    return seen_all


def _status(state: str) -> Callable[[str, Document], bool]:
    return lambda topic, message: topic.endswith("/status") and message["state"] == state


# Commands covering every kind of result the daemon makes, and a rejection (a cancel of an unknown id);
# the daemon traffic adds a deploy that installs a bundle and one whose download has the wrong sha256.
DAEMON_COMMANDS: List[Tuple[str, Dict[str, Any]]] = [
    ("ping", {}), ("models", {}), ("info", {}), ("bench", QUICK_BENCH),
    ("eval", {"model": "models/digits", "backend": "tflite", "eval_limit": 20}),
    ("select", {"model": "models/digits", "time_limit": 3}),
    ("cancel", {"target": "never-sent"}),
]


@pytest.fixture(scope="module")
def daemon_traffic(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Every message a real daemon published to a real Mosquitto while it answered DAEMON_COMMANDS, two
    deploys from a local http server, a malformed payload and a cancelled job, stopped cleanly, and was
    killed (the broker's last will); and every command payload sent to it."""
    pytest.importorskip("paho.mqtt")
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    workdir = tmp_path_factory.mktemp("schemas-daemon")
    device = f"dev-{uuid.uuid4().hex[:8]}"
    sent: List[bytes] = []
    (workdir / "served").mkdir()
    with Broker(workdir / "broker") as broker, coordinator(broker) as fleet, \
            served_folder(workdir / "served") as served:
        fleet.subscribe(*(f"edge/{device}/{topic}" for topic in ("status", "telemetry", "events", "results")))
        agent = AgentProcess(workdir / "agent", broker, device_id=device, settings={
            "telemetry": {"interval_s": 1}, "deploy": {"http_hosts": ["127.0.0.1"]}})
        agent.start()
        messages = wire_messages(fleet, _status("online"))

        def send(cmd: str, args: Dict[str, Any]) -> str:
            command = Command(uuid.uuid4().hex, cmd, args)
            sent.append(encode_command(command))
            fleet.send(device, cmd, args, command.id)
            return command.id

        installed = dict(publish(served, "fresh.tar.gz", bundle_tar("fresh")), name="fresh")
        deploys = [("deploy", installed), ("deploy", dict(installed, sha256="0" * 64))]
        for cmd, args in DAEMON_COMMANDS + deploys:
            messages += wire_messages(fleet, _answer_to(send(cmd, args)))
        fleet.publish(device, Command("x", "ping"), b"{not json")
        messages += wire_messages(fleet, _answer_to(None))
        long_run = send("bench", dict(QUICK_BENCH, min_seconds=60))
        messages += wire_messages(fleet, lambda _, m: m.get("command_id") == long_run and m.get("event") == "started")
        messages += wire_messages(fleet, _results_of(long_run, send("cancel", {"target": long_run})))
        assert agent.stop() == 0
        messages += wire_messages(fleet, _status("offline"))
        agent.start()
        messages += wire_messages(fleet, _status("online"))
        agent.kill()
        messages += wire_messages(fleet, _status("offline"))
    return {"messages": messages, "commands": sent}


@NEEDS_MOSQUITTO
@pytest.mark.mqtt
def test_every_message_a_real_daemon_publishes_validates(daemon_traffic: Dict[str, Any]) -> None:
    by_kind: Dict[str, List[Document]] = defaultdict(list)
    for _, message in daemon_traffic["messages"]:
        by_kind[message["schema"]].append(message)
    assert sorted(by_kind) == sorted(schema_name(kind) for kind in MESSAGE_TYPES)
    results = by_kind[schema_name("result")]
    assert {r["cmd"] for r in results} >= {cmd for cmd, _ in DAEMON_COMMANDS} | {"deploy"}
    assert {r["status"] for r in results if r["cmd"] == "deploy"} == {"done", "failed"}
    assert {r["status"] for r in results} == {"done", "failed", "cancelled"}
    events = {e["event"] for e in by_kind[schema_name("event")]}
    assert events >= {"accepted", "rejected", "started", "progress", "done", "failed", "cancelled"}
    assert len(by_kind[schema_name("status")]) == 4  # online, clean offline, online, the last will
    for kind in MESSAGE_TYPES:
        assert_valid(f"{kind}.schema.json", *by_kind[schema_name(kind)])


@NEEDS_MOSQUITTO
@pytest.mark.mqtt
def test_every_command_sent_validates(daemon_traffic: Dict[str, Any]) -> None:
    assert_valid("command.schema.json", *(json.loads(payload) for payload in daemon_traffic["commands"]))


# Arguments the parser accepts, one value of every kind each argument takes.
GOOD_ARGS: Dict[str, Dict[str, Any]] = {
    "bench": {"model": "mobilenet_v2/model.fp32.onnx", "backend": ["onnxruntime", "tflite"], "precision": "int8",
              "threads": 4, "options": {"xnnpack": "off"}, "shape": {"image": [1, 8, 8, 1]}, "batch": [1, 8],
              "eval_limit": 50, "time_limit": 30.5, "seed": 7, "memory_limit_mb": 512, "warmup": "10,2.5s",
              "iterations": 200, "min_seconds": 0},
    "profile": {"model": "digits", "backend": "auto", "top": 10, "iterations": 5},
    "select": {"model": "digits", "budget": 0.5, "objective": "p99", "time_limit": 60},
    "deploy": {"url": "https://models.example.com/b.tar", "sha256": "A" * 64, "bytes": 1024, "name": "b"},
    "cancel": {"target": "job-1"},
    "eval": {"model": "digits", "batch": 4},
}
BAD_ARGS: List[Tuple[str, Dict[str, Any]]] = [
    ("bench", {}), ("bench", {"model": "../etc"}), ("bench", {"model": "d", "threads": "2"}),
    ("bench", {"model": "d", "threads": 0}), ("bench", {"model": "d", "backend": "cuda"}),
    ("bench", {"model": "d", "options": {"path": "x"}}), ("eval", {"model": "d", "iterations": 5}),
    ("ping", {"force": True}), ("select", {"model": "d", "objective": "speed"}),
    ("deploy", {"url": "ftp://x/y", "sha256": "0" * 64, "bytes": 1, "name": "b"}), ("cancel", {}),
]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_commands_the_parser_accepts_validate(cmd: str) -> None:
    payload = encode_command(Command("c-1", cmd, GOOD_ARGS.get(cmd, {})))
    parse_command(payload)
    assert_valid("command.schema.json", json.loads(payload))


@pytest.mark.parametrize("cmd,args", BAD_ARGS)
def test_commands_the_parser_rejects_are_invalid(cmd: str, args: Dict[str, Any]) -> None:
    payload = encode_command(Command("c-1", cmd, args))
    with pytest.raises(ProtocolError):
        parse_command(payload)
    assert problems("command.schema.json", json.loads(payload))


# (c) broken documents are rejected

def _drop(path: Tuple[Any, ...]) -> Callable[[Any], None]:
    def edit(document: Any) -> None:
        for key in path[:-1]:
            document = document[key]
        del document[path[-1]]
    return edit


def _set(path: Tuple[Any, ...], value: Any) -> Callable[[Any], None]:
    def edit(document: Any) -> None:
        for key in path[:-1]:
            document = document[key]
        document[path[-1]] = value
    return edit


def _sample(request: pytest.FixtureRequest, cli_reports: Dict[str, Any], schema: str) -> Any:
    """One real document of the schema's kind (the daemon's traffic only for protocol messages)."""
    if schema == "report.schema.json":
        return cli_reports["bench"][0]
    if schema == "selection.schema.json":
        return cli_reports["select"]
    if schema == "info.schema.json":
        return info()
    if schema == "device.schema.json":
        return device_section(str(BOARDS[0])).to_dict()
    daemon_traffic = request.getfixturevalue("daemon_traffic")
    if schema == "command.schema.json":
        return json.loads(daemon_traffic["commands"][3])
    kind = schema.split(".")[0]
    return next(m for _, m in daemon_traffic["messages"] if m["schema"] == schema_name(kind)
                and (kind != "result" or m["cmd"] == "bench"))


BROKEN: List[Tuple[str, str, Callable[[Any], None]]] = [
    ("report.schema.json", "a required field removed", _drop(("latency", "p99_ms"))),
    ("report.schema.json", "a field the schema does not know", _set(("latency", "p99_99_ms"), 1.0)),
    ("report.schema.json", "a wrong type", _set(("memory", "peak_rss_mb"), "69 MB")),
    ("report.schema.json", "a nested device field removed", _drop(("device", "cpu", "cores"))),
    ("selection.schema.json", "a candidate's field removed", _drop(("selection", "candidates", 0, "status"))),
    ("selection.schema.json", "a wrong type", _set(("selection", "elapsed_s"), "9 s")),
    ("info.schema.json", "a required field removed", _drop(("runtimes", 0, "available"))),
    ("device.schema.json", "a wrong type", _set(("gpu_count",), "none")),
    ("command.schema.json", "an unknown argument", _set(("args", "force"), True)),
    ("command.schema.json", "a required argument removed", _drop(("args", "model"))),
    ("event.schema.json", "a wrong type", _set(("command_id",), 5)),
    ("event.schema.json", "an unknown event", _set(("event",), "paused")),
    ("result.schema.json", "a report of another shape", _drop(("report", "reports", 0, "model", "sha256"))),
    ("result.schema.json", "a required field removed", _drop(("status",))),
    ("status.schema.json", "a wrong state", _set(("state",), "away")),
    ("status.schema.json", "a field the schema does not know", _set(("uptime_s",), 5)),
    ("telemetry.schema.json", "a wrong type", _set(("readings", "load"), "high")),
    ("telemetry.schema.json", "a reading removed", _drop(("readings", "cpu_mhz"))),
]


def test_every_schema_has_a_broken_document_case() -> None:
    assert {schema for schema, _, _ in BROKEN} == set(ALL)


@pytest.mark.parametrize("schema,case,edit", BROKEN, ids=[f"{s}: {c}" for s, c, _ in BROKEN])
def test_a_broken_document_is_rejected(request: pytest.FixtureRequest, cli_reports: Dict[str, Any], schema: str,
                                       case: str, edit: Callable[[Any], None]) -> None:
    document = copy.deepcopy(_sample(request, cli_reports, schema))
    assert_valid(schema, document)
    edit(document)
    assert problems(schema, document), f"{schema} accepted a document with {case}"


# (d) drift: the code's fields against the schemas'

def _closed_fields(where: str) -> Tuple[Set[str], Set[str]]:
    """(properties, required) of the object schema at `where`."""
    name, _, pointer = where.partition("#")
    node: Any = ALL[name]
    for part in filter(None, pointer.split("/")):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return set(node["properties"]), set(node.get("required", ()))


def drift(where: str, produced: Set[str], optional: Optional[Set[str]] = None) -> List[str]:
    """Each field the code produces that the schema at `where` lacks, and each field the schema lists that
    the code does not produce (`optional`: fields the code may leave out)."""
    properties, required = _closed_fields(where)
    optional = optional or set()
    lines = [f"{where}: the code produces `{key}`, the schema does not list it (add it to the schema)"
             for key in sorted(produced - properties)]
    lines += [f"{where}: the schema lists `{key}`, the code does not produce it (drop it from the schema)"
              for key in sorted(properties - produced - optional)]
    lines += [f"{where}: `{key}` is optional in the code, required by the schema"
              for key in sorted(required & optional)]
    return lines


def _names(cls: Any) -> Set[str]:
    return {item.name for item in fields(cls)}


def test_report_sections_match_the_code(cli_reports: Dict[str, Any]) -> None:
    """The keys real reports carry, section by section, against the report schema (both directions)."""
    reports = cli_reports["bench"]
    ok = [r for r in reports if r["status"] == "ok"]
    latency = {key for r in ok for key in r["latency"]}
    batch = {key for r in ok for entry in r["latency_by_batch"] or [] for key in entry}
    summary = set(summarize([1000, 2000, 3000]))
    live = read_thermal()
    lines = drift("report.schema.json", {key for r in reports for key in r})
    lines += drift("report.schema.json#/$defs/summary", summary)
    lines += drift("report.schema.json#/$defs/latency", latency - summary, {"device_compute"})
    lines += drift("report.schema.json#/$defs/batch_latency", batch - summary, {"device_compute"})
    lines += drift("report.schema.json#/$defs/thermal", set(throttle_report(live, live)))
    lines += drift("report.schema.json#/$defs/memory", _names(MemoryUse))
    lines += drift("report.schema.json#/$defs/backend", _names(BackendRun))
    for section in ("model", "accuracy"):
        lines += drift(f"report.schema.json#/$defs/{section}", {key for r in ok for key in r[section] or {}})
    assert not lines, "\n".join(lines)


def test_typed_records_match_their_dataclasses() -> None:
    """Dataclass fields against the schemas: the device section's parts, select's candidates and every
    protocol message (optional message fields are those with a default)."""
    lines = drift("device.schema.json", _names(DeviceInfo) | {"fingerprint"})
    parts: Dict[str, Any] = {"cpu": CpuInfo, "cluster": CpuCluster, "jetson": JetsonInfo, "power_mode": PowerMode,
                             "python": PythonInfo}
    for name, part in parts.items():
        lines += drift(f"device.schema.json#/$defs/{name}", _names(part))
    lines += drift("selection.schema.json#/$defs/candidate", _names(Candidate))
    for kind, cls in MESSAGE_TYPES.items():
        optional = {item.name for item in fields(cls) if item.default is not MISSING}
        lines += drift(f"{kind}.schema.json", _names(cls) | {"schema"}, optional)
    assert not lines, "\n".join(lines)


def test_command_arguments_match_the_parser() -> None:
    """Each command's arguments and which are required, and the command names, as agent/mqtt/schema.py has them."""
    names = ALL["command.schema.json"]["properties"]["cmd"]["enum"]
    lines = [] if set(names) == set(COMMANDS) else [
        f"command.schema.json: cmd lists {sorted(names)}, the parser knows {sorted(COMMANDS)}"]
    for name, spec in COMMANDS.items():
        where = f"command.schema.json#/$defs/{name}_args"
        lines += drift(where, set(spec.args), {arg for arg, rule in spec.args.items() if not rule.required})
        _, required = _closed_fields(where)
        lines += [f"{where}: `{arg}` is required by the parser, not by the schema"
                  for arg, rule in spec.args.items() if rule.required and arg not in required]
    assert not lines, "\n".join(lines)


def test_the_drift_check_names_the_field_and_the_side() -> None:
    """What the main session will read when it adds a latency field without the schema, or drops one."""
    assert drift("report.schema.json#/$defs/memory", _names(MemoryUse) | {"swap_mb"}) == [
        "report.schema.json#/$defs/memory: the code produces `swap_mb`, the schema does not list it "
        "(add it to the schema)"]
    assert drift("report.schema.json#/$defs/memory", _names(MemoryUse) - {"peak_rss_mb"}) == [
        "report.schema.json#/$defs/memory: the schema lists `peak_rss_mb`, the code does not produce it "
        "(drop it from the schema)"]
    latency = {"load_ms": 1.0, "first_ms": 1.0, "jitter_ms": 0.1, **summarize([1000, 2000]), "rounds": 1}
    del latency["p95_ms"]  # and no `stability` or `environment` either
    required = ("the code did not produce it (drop it from the schema, or mark it optional in "
                "tests/test_schemas.py OPTIONAL)")
    assert problems("report.schema.json#/$defs/latency", latency) == [
        "report.schema.json#/$defs/latency at $: the code produces `jitter_ms`, the schema does not list it "
        "(add it to the schema)"] + [f"report.schema.json#/$defs/latency at $: the schema requires `{key}`, {required}"
                                     for key in ("environment", "p95_ms", "stability")]
