"""Protocol v1: topics, command validation with stable error codes, and outgoing messages."""

from __future__ import annotations

import json
import math
from typing import Optional

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.errors import AgentError, ProtocolError
from agent.mqtt.protocol import (
    COMMANDS,
    ERROR_CODES,
    Command,
    Event,
    Limits,
    Result,
    Status,
    Telemetry,
    Topics,
    decode_message,
    encode,
    encode_command,
    new_command_id,
    parse_command,
    target_topic,
    validate_device_id,
    validate_group_name,
)

SHA = "ab" * 32
VALID_COMMANDS = [
    Command("c-1", "ping"),
    Command("c-2", "info"),
    Command("c-3", "models"),
    Command("c-4", "deploy", {"url": "https://models.example.com/digits.tar", "sha256": SHA,
                              "bytes": 123456, "name": "digits"}),
    Command("c-5", "bench", {"model": "digits", "backend": ["tflite"], "precision": ["int8", "fp32"],
                             "threads": 2, "options": {"xnnpack": "off"}, "warmup": "10,1.5s", "iterations": 200,
                             "min_seconds": 2.0, "batch": [1, 8], "shape": {"image": [1, 8, 8, 1]},
                             "eval_limit": 100, "time_limit": 120.0, "seed": 7}),
    Command("c-6", "eval", {"model": "mobilenet_v2/model.fp32.onnx", "backend": ["onnxruntime", "auto"]}),
    Command("c-7", "profile", {"model": "digits", "shape": {"x:0": [1, 3, 224, 224]}, "top": 10}),
    Command("c-8", "select", {"model": "digits", "budget": 1.0, "time_limit": 60.0, "objective": "p99"}),
    Command("2b7e:f00d.x_y-z", "cancel", {"target": "c-5"}),
]


def envelope(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def rejection(payload: bytes, limits: Optional[Limits] = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_command(payload, limits or Limits())
    return caught.value


@pytest.mark.parametrize("command", VALID_COMMANDS, ids=lambda command: command.cmd)
def test_valid_commands_round_trip(command: Command) -> None:
    assert parse_command(encode_command(command)) == command


def test_every_command_is_covered_by_a_valid_example() -> None:
    assert {command.cmd for command in VALID_COMMANDS} == set(COMMANDS)


def test_cheap_commands_run_before_measurements() -> None:
    priority = {command.cmd: command.priority for command in VALID_COMMANDS}
    assert priority["cancel"] < priority["ping"] == priority["info"] < priority["deploy"] < priority["bench"]


def test_single_values_of_list_arguments_become_lists() -> None:
    command = parse_command(envelope(id="x", cmd="bench", args={"model": "m", "backend": "tflite",
                                                                 "precision": "fp32", "batch": 4, "warmup": 3}))
    assert command.args == {"model": "m", "backend": ["tflite"], "precision": ["fp32"], "batch": [4], "warmup": 3}


def test_command_record_keeps_reply_properties() -> None:
    command = parse_command(encode_command(VALID_COMMANDS[4]), response_topic="edge/jet-1/reply/ui",
                            correlation_data=b"\x00\xffk")
    assert Command.from_record(command.to_record()) == command


BAD_PAYLOADS = {
    "invalid_json": [b"{", b"\xff\xfe{}", b'{"id": NaN}', b'{"id": "a", "id": "b", "cmd": "ping"}',
                     b"[" * 5000 + b"]" * 5000],
    "not_an_object": [b"[]", b'"ping"', b"42", b"null"],
    "bad_argument": [b'{"id": "x", "cmd": "profile", "args": {"model": "m", "shape": {"\\udfff": [1]}}}',
                     b'{"id": "x", "cmd": "ping", "args": {"\\ud800": 1}}',
                     b'{"id": "x", "cmd": "bench", "args": {"model": "m", "batch": [1, ["\\udc00"]]}}'],
    "missing_field": [envelope(cmd="ping"), envelope(id="x"), envelope(id="x", cmd="bench", args={}),
                      envelope(id="x", cmd="deploy", args={"url": "https://a.example/b", "name": "m"})],
    "wrong_type": [envelope(id=7, cmd="ping"), envelope(id="x", cmd=["ping"]),
                   envelope(id="x", cmd="ping", args=[]),
                   envelope(id="x", cmd="bench", args={"model": "m", "threads": "2"}),
                   envelope(id="x", cmd="bench", args={"model": "m", "threads": True}),
                   envelope(id="x", cmd="bench", args={"model": 5}),
                   envelope(id="x", cmd="bench", args={"model": "m", "shape": [1, 2]}),
                   envelope(id="x", cmd="bench", args={"model": "m", "options": ["xnnpack=off"]}),
                   envelope(id="x", cmd="bench", args={"model": "m", "batch": [1, "2"]})],
    "unknown_command": [envelope(id="x", cmd="reboot"), envelope(id="x", cmd="")],
    "unknown_argument": [envelope(id="x", cmd="ping", args={"force": True}),
                         envelope(id="x", cmd="ping", extra=1),
                         envelope(id="x", cmd="eval", args={"model": "m", "warmup": 5}),
                         envelope(id="x", cmd="bench", args={"model": "m", "fault": "segfault"}),
                         envelope(id="x", cmd="bench", args={"model": "m", "input": {"x": "/etc/shadow"}})],
    "bad_value": [envelope(id="", cmd="ping"), envelope(id="a/b", cmd="ping"), envelope(id="x" * 129, cmd="ping"),
                  envelope(id="x", cmd="ping", schema="edge-agent/command/2"),
                  envelope(id="x", cmd="bench", args={"model": "m", "threads": 0}),
                  envelope(id="x", cmd="bench", args={"model": "m", "precision": "fp64"}),
                  envelope(id="x", cmd="bench", args={"model": "m", "warmup": "ten"}),
                  envelope(id="x", cmd="bench", args={"model": "m", "warmup": "1s,2s,3"}),
                  envelope(id="x", cmd="bench", args={"model": "m", "backend": []}),
                  envelope(id="x", cmd="bench", args={"model": "m", "backend": ["tflite", "mxnet"]}),
                  envelope(id="x", cmd="bench", args={"model": "m", "options": {"provider": "a b"}}),
                  envelope(id="x", cmd="profile", args={"model": "m", "options": {"profile_dir": ".."}}),
                  envelope(id="x", cmd="bench", args={"model": "m", "options": {"cache_dir": "tmp"}}),
                  envelope(id="x", cmd="bench", args={"model": "m", "shape": {"x": [0]}}),
                  envelope(id="x", cmd="select", args={"model": "m", "budget": -1}),
                  envelope(id="x", cmd="cancel", args={"target": "../x"}),
                  envelope(id="x", cmd="deploy", args={"url": "http://evil.example/m", "sha256": SHA,
                                                       "bytes": 1, "name": "m"}),
                  envelope(id="x", cmd="deploy", args={"url": "file:///etc/passwd", "sha256": SHA,
                                                       "bytes": 1, "name": "m"}),
                  envelope(id="x", cmd="deploy", args={"url": "https://u:p@a.example/m", "sha256": SHA,
                                                       "bytes": 1, "name": "m"}),
                  envelope(id="x", cmd="deploy", args={"url": "https://a.example/m", "sha256": "abc",
                                                       "bytes": 1, "name": "m"}),
                  envelope(id="x", cmd="deploy", args={"url": "https://a.example/m", "sha256": SHA,
                                                       "bytes": 5 * 1024 ** 3, "name": "m"})],
    "too_large": [envelope(id="x", cmd="ping", pad="x" * 70_000)],
    "bad_model_name": [envelope(id="x", cmd="bench", args={"model": name})
                       for name in ("../etc/passwd", "/etc/passwd", "digits/../../x", "..", ".hidden",
                                    "a\\b", "a\0b", "", "a//b", "a/b/c/d/e", "x" * 65)]
                      + [envelope(id="x", cmd="deploy", args={"url": "https://a.example/m", "sha256": SHA,
                                                              "bytes": 1, "name": "digits/evil"})],
}


def test_bad_payloads_cover_every_error_code() -> None:
    assert set(BAD_PAYLOADS) == set(ERROR_CODES)


@pytest.mark.parametrize("code,payload", [(code, payload) for code, payloads in BAD_PAYLOADS.items()
                                          for payload in payloads])
def test_each_bad_payload_gets_its_code(code: str, payload: bytes) -> None:
    error = rejection(payload)
    assert error.code == code, error.message
    assert isinstance(error, AgentError) and error.message and len(error.message) < 400


def test_size_cap_is_checked_before_parsing() -> None:
    limits = Limits(max_payload_bytes=100)
    assert rejection(b"{" * 101, limits).code == "too_large"  # invalid JSON, but too large first
    assert parse_command(envelope(id="x", cmd="ping"), limits).cmd == "ping"


def test_rejection_carries_the_readable_command_id() -> None:
    assert rejection(envelope(id="job-9", cmd="reboot")).command_id == "job-9"
    assert rejection(envelope(id="a/b", cmd="ping")).command_id is None
    assert rejection(b"[]").command_id is None


def test_plain_http_only_from_allow_listed_hosts() -> None:
    deploy = envelope(id="x", cmd="deploy", args={"url": "http://models.lan:8080/d.tar", "sha256": SHA,
                                                  "bytes": 10, "name": "d"})
    assert rejection(deploy).code == "bad_value"
    assert parse_command(deploy, Limits(http_hosts=("Models.LAN",))).args["url"].startswith("http://")


def test_sha256_is_normalised_to_lower_case() -> None:
    deploy = envelope(id="x", cmd="deploy", args={"url": "https://a.example/m", "sha256": SHA.upper(),
                                                  "bytes": 1, "name": "m"})
    assert parse_command(deploy).args["sha256"] == SHA


@pytest.mark.parametrize("topic", ["edge/+/x", "edge/#", "$SYS/x", "", "a\0b", "x" * 300])
def test_bad_response_topic_is_rejected(topic: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_command(envelope(id="x", cmd="ping"), response_topic=topic)
    assert caught.value.code == "bad_value"


def test_topics_of_a_device() -> None:
    topics = Topics("jetson-01", groups=("lab", "orin"))
    assert topics.subscriptions() == ["edge/jetson-01/cmd", "edge/group/lab/cmd", "edge/group/orin/cmd",
                                      "edge/all/cmd"]
    assert [topics.topic(kind) for kind in ("status", "telemetry", "event", "result")] == [
        "edge/jetson-01/status", "edge/jetson-01/telemetry", "edge/jetson-01/events", "edge/jetson-01/results"]
    assert Topics("pi", root="acme/edge").subscriptions()[0] == "acme/edge/pi/cmd"
    assert [target_topic(t) for t in ("pi-4", "group:lab", "all")] == [
        "edge/pi-4/cmd", "edge/group/lab/cmd", "edge/all/cmd"]


@pytest.mark.parametrize("name", ["a+b", "a#", "a/b", "", "-x", "x" * 65, "é", "a b", "a\0"])
def test_unsafe_names_are_refused_for_devices_and_groups(name: str) -> None:
    for check in (validate_device_id, validate_group_name, Topics, lambda group: Topics("ok", groups=(group,)),
                  lambda group: target_topic(f"group:{group}")):
        with pytest.raises(ProtocolError) as caught:
            check(name)
        assert caught.value.code == "bad_value"
    with pytest.raises(ProtocolError):
        validate_device_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["all", "group"])
def test_broadcast_and_group_words_are_reserved_device_ids(name: str) -> None:
    with pytest.raises(ProtocolError):
        validate_device_id(name)
    assert validate_group_name(name) == name
    assert Topics("ok", groups=[name]).subscriptions()[1] == f"edge/group/{name}/cmd"


def test_decoding_a_foreign_message_fails_cleanly() -> None:
    for payload in (b'{"schema": ["x"]}', b'{"schema": "edge-agent/event/1"}', b"[]", b"\xff"):
        with pytest.raises(ProtocolError):
            decode_message(payload)


def test_publications_route_by_kind_and_copy_to_response_topic() -> None:
    topics = Topics("pi-5")
    status, = topics.publications(Status("pi-5", "online", "0.1.0"))
    telemetry, = topics.publications(Telemetry("pi-5", {"load": 0.1}))
    assert (status.topic, status.qos, status.retain, status.kind) == ("edge/pi-5/status", 1, True, "status")
    assert (telemetry.qos, telemetry.retain) == (0, False)
    command = Command("c1", "bench", {"model": "m"}, response_topic="edge/pi-5/reply/ui", correlation_data=b"k")
    own, reply = topics.publications(Result("pi-5", "c1", "bench", "done", report={"p50_ms": 1.0}), command)
    assert (own.topic, own.qos, own.retain) == ("edge/pi-5/results", 1, False)
    assert (reply.topic, reply.correlation_data, reply.payload) == ("edge/pi-5/reply/ui", b"k", own.payload)


def test_messages_carry_schema_and_utc_timestamp_and_round_trip() -> None:
    messages = [Event("d", "c1", "rejected", cmd="x", code="unknown_command", message="no"),
                Event("d", None, "rejected", code="invalid_json", message="payload is not valid JSON"),
                Event("d", "c1", "progress", progress=0.5, detail={"step": "warmup"}),
                Result("d", "c1", "bench", "failed", code="worker_crashed", message="SIGSEGV"),
                Status("d", "offline", "0.1.0", groups=["lab"], platform={"arch": "aarch64"}),
                Telemetry("d", {"cpu_temp_c": 51.2}, job="c1")]
    for message in messages:
        body = json.loads(encode(message))
        assert body["schema"] == f"edge-agent/{message.KIND}/1"
        assert body["ts"].endswith("Z") and "T" in body["ts"]
        assert [key for key, value in body.items() if value is None] in ([], ["command_id"])
        assert decode_message(encode(message)) == message


def test_encode_always_gives_valid_json() -> None:
    numpy = pytest.importorskip("numpy")
    report = {"p50_ms": numpy.float32(1.5), "outputs": numpy.array([1, 2]), "max_abs": math.nan,
              "snr_db": math.inf, "low": -math.inf}
    body = json.loads(encode(Result("d", "c1", "eval", "done", report=report)))
    assert body["report"] == {"p50_ms": 1.5, "outputs": [1, 2], "max_abs": "NaN", "snr_db": "Infinity",
                              "low": "-Infinity"}


def test_unknown_event_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Event("d", "c1", "exploded")


def test_new_command_ids_are_valid_and_unique() -> None:
    ids = {new_command_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(parse_command(envelope(id=i, cmd="ping")).id == i for i in ids)


# Generated payloads: whatever arrives, the answer is a Command or a ProtocolError with a known code.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
names = st.sampled_from(["digits", "../x", "/etc/passwd", "a/../../b", "..", "a\0b", "", "m" * 300,
                         "mobilenet_v2/model.fp32.onnx", "C:\\x"]) | st.text(max_size=30)
plausible = st.sampled_from([1, 4, 0, -1, 2.5, "fp32", "int8", "tflite", "auto", "2s", "p99", SHA, ["tflite"],
                             [1, 2], [], {"xnnpack": "off"}, "10,2s",
                             "https://a.example/m.tar", "http://a.example/m", {"x": [1, 3]}, {"x": [0]}])
values = names | plausible | json_values | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
any_args = st.dictionaries(st.text(max_size=8), values, max_size=4)
command_ids = st.text("abc019_.:-/", min_size=1, max_size=20) | st.text(max_size=12)


def command_envelopes(name: str) -> st.SearchStrategy:
    """Envelopes for one known command whose arguments are its own, each with a drawn value."""
    spec = COMMANDS[name].args
    required = {key: values for key, arg in spec.items() if arg.required}
    optional = {key: values for key, arg in spec.items() if not arg.required}
    return st.fixed_dictionaries({"id": command_ids, "cmd": st.sampled_from([name, name, name, name.upper()]),
                                  "args": st.fixed_dictionaries(required, optional=optional)},
                                 optional={"schema": st.just("edge-agent/command/1")})


well_formed = st.sampled_from(sorted(COMMANDS)).flatmap(command_envelopes)
mangled = st.fixed_dictionaries(
    {}, optional={"id": command_ids | json_values, "cmd": st.sampled_from(sorted(COMMANDS)) | json_values,
                  "args": any_args | json_values, "schema": json_values, "extra": json_values})
envelopes = well_formed | well_formed | mangled
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    envelopes.map(lambda value: json.dumps(value).encode()),
    envelopes.map(lambda value: json.dumps(value).encode("utf-16")),
    st.integers(min_value=60_000, max_value=70_000).map(lambda size: b'{"id":"x","cmd":"ping","p":"'
                                                        + b"a" * size + b'"}'),
    st.integers(min_value=1, max_value=50_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_payload_gives_a_command_or_a_known_error(payload: bytes) -> None:
    try:
        command = parse_command(payload)
    except ProtocolError as error:
        event(error.code)
        assert error.code in ERROR_CODES
        assert error.command_id is None or isinstance(error.command_id, str)
    else:
        event("valid command")
        assert command.cmd in COMMANDS
        assert parse_command(encode_command(command)) == command


def test_the_remote_options_are_backend_options_and_name_no_path() -> None:
    from agent.backends.registry import BACKENDS
    from agent.mqtt.schema import REMOTE_OPTIONS

    known = {name for backend in BACKENDS.values() for name in backend.option_defaults}
    assert known >= REMOTE_OPTIONS and not any("dir" in name or "path" in name or "file" in name for name in known)

