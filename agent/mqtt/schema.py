"""The v1 command schema: stable error codes, limits, and each command's arguments with their checks.

Hand-written rather than JSON Schema so that every failure maps to exactly one stable code and a
message naming the field, and so that no dependency is needed on a board. `agent.mqtt.protocol`
applies it to the envelope; this module knows nothing of MQTT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import urlsplit

from agent.errors import ProtocolError

ERROR_CODES = ("invalid_json", "bad_argument", "not_an_object", "missing_field", "wrong_type", "unknown_command",
               "unknown_argument", "bad_value", "too_large", "bad_model_name")
# The backend options a command may set (docs/protocol.md); the others (a path, say) are the device's own.
REMOTE_OPTIONS = frozenset({"graph_optimization", "inter_op_threads", "execution_mode", "provider", "quantization",
                            "xnnpack", "workspace_mb", "dla_core", "int8_calibration"})
_COMMAND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_MODEL_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAX_MODEL_DEPTH = 4
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_COUNT_OR_SECONDS = r"([0-9]{1,7}|[0-9]{1,4}(\.[0-9]{1,6})?s)"
_WARMUP = re.compile(f"{_COUNT_OR_SECONDS}(,{_COUNT_OR_SECONDS})?")
_OPTION = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_OPTIONS = 16
_MAX_URL = 2048
_MAX_SHAPE_INPUTS = 16
_MAX_RANK = 8


@dataclass(frozen=True)
class Limits:
    """What a command may ask for: payload size, download size, and the hosts downloads may come from
    (`deploy_hosts`, empty: any; `http_hosts` also over plain http; compared case-insensitively)."""

    max_payload_bytes: int = 64 * 1024
    max_deploy_bytes: int = 4 * 1024 ** 3
    deploy_hosts: Tuple[str, ...] = ()
    http_hosts: Tuple[str, ...] = ()


Checker = Callable[[str, Any, Limits], Any]


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its check (returns the value to use) and whether it is required."""

    check: Checker
    required: bool = False


@dataclass(frozen=True)
class CommandSpec:
    """A command's queue priority (lower runs first) and its arguments."""

    priority: int
    args: Dict[str, Arg]

    def check(self, args: Dict[str, Any], limits: Limits) -> Dict[str, Any]:
        """Validate a command's `args` object: no unknown names, every required one, each checked."""
        for name in args:
            if name not in self.args:
                known = ", ".join(sorted(self.args)) or "none"
                raise ProtocolError("unknown_argument", f"unknown argument {show(name)} (known: {known})")
        for name, spec in self.args.items():
            if spec.required and name not in args:
                raise ProtocolError("missing_field", f"argument {name!r} is required")
        return {name: self.args[name].check(name, value, limits) for name, value in args.items()}


def show(value: object) -> str:
    """A short printable form of an untrusted value for an error message (at most ~40 characters)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong_type(name: str, value: object, expected: str) -> ProtocolError:
    return ProtocolError("wrong_type", f"{name!r} must be {expected}, not {type(value).__name__}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong_type(name, value, "a string")
    return value


def integer(low: int, high: int) -> Checker:
    """A checker for a whole number in [low, high] (true/false are not numbers)."""
    def check(name: str, value: Any, limits: Limits) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(name, value, "an integer")
        if not low <= value <= high:
            raise ProtocolError("bad_value", f"{name!r} is {show(value)}, outside {low}..{high}")
        return value
    return check


def number(low: float, high: float) -> Checker:
    """A checker for a finite number in [low, high], returned as a float."""
    def check(name: str, value: Any, limits: Limits) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(name, value, "a number")
        if not low <= value <= high:  # also false for NaN
            raise ProtocolError("bad_value", f"{name!r} is {show(value)}, outside {low:g}..{high:g}")
        return float(value)
    return check


def choice(*allowed: str) -> Checker:
    """A checker for one string out of a fixed set."""
    def check(name: str, value: Any, limits: Limits) -> str:
        if _text(name, value) not in allowed:
            raise ProtocolError("bad_value", f"{name!r} is {show(value)}, not one of {', '.join(allowed)}")
        return value
    return check


def check_command_id(name: str, value: Any, limits: Limits) -> str:
    """A command id: 1-128 of A-Z a-z 0-9 _ . : - starting with a letter or digit."""
    if not _COMMAND_ID.fullmatch(_text(name, value)):
        raise ProtocolError("bad_value", f"{name!r} {show(value)} must be 1-128 of A-Z a-z 0-9 _ . : - "
                                         "starting with a letter or digit")
    return value


def is_command_id(value: object) -> bool:
    """Whether `value` is a well-formed command id."""
    return isinstance(value, str) and _COMMAND_ID.fullmatch(value) is not None


def model_name(name: str, value: Any, limits: Limits) -> str:
    """A model in the model store: up to 4 `/`-separated segments of A-Z a-z 0-9 _ . -, none
    starting with a dot, so no absolute path, `..`, hidden file, backslash or NUL can escape it."""
    segments = _text(name, value).split("/")
    if len(segments) > _MAX_MODEL_DEPTH or not all(_MODEL_SEGMENT.fullmatch(part) for part in segments):
        raise ProtocolError("bad_model_name", f"{name!r} {show(value)} is not a model name in the store "
                                              "(segments of A-Z a-z 0-9 _ . - not starting with '.', "
                                              f"at most {_MAX_MODEL_DEPTH} deep)")
    return value


def bundle_name(name: str, value: Any, limits: Limits) -> str:
    """A bundle folder name in the model store: one model-name segment."""
    if "/" in model_name(name, value, limits):
        raise ProtocolError("bad_model_name", f"{name!r} {show(value)} must be a single folder name")
    return value


def sha256(name: str, value: Any, limits: Limits) -> str:
    """A SHA-256 digest as 64 hex digits, returned in lower case."""
    if not _SHA256.fullmatch(_text(name, value)):
        raise ProtocolError("bad_value", f"{name!r} must be 64 hexadecimal digits, got {show(value)}")
    return value.lower()


def download_size(name: str, value: Any, limits: Limits) -> int:
    """The announced size of a download, at most the configured cap."""
    return integer(1, limits.max_deploy_bytes)(name, value, limits)


def download_url(name: str, value: Any, limits: Limits) -> str:
    """An https URL, or http from a host in `limits.http_hosts`, from a host in `limits.deploy_hosts` when
    that list is not empty; no credentials, spaces or control characters."""
    text = _text(name, value)
    problem = None
    if len(text) > _MAX_URL or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in text):
        problem = f"must be at most {_MAX_URL} characters without spaces or control characters"
    else:
        try:
            parts = urlsplit(text)
            host, _ = parts.hostname, parts.port  # .port raises ValueError when malformed
        except ValueError as error:
            raise ProtocolError("bad_value", f"{name!r} is not a URL: {error}") from None
        if parts.username is not None or parts.password is not None:
            problem = "must not carry credentials"
        elif not host or not (parts.scheme == "https" or (
                parts.scheme == "http" and host in {allowed.lower() for allowed in limits.http_hosts})):
            problem = "must be https:// (or http:// from an allow-listed host)"
        elif limits.deploy_hosts and host not in {h.lower() for h in limits.deploy_hosts + limits.http_hosts}:
            problem = f"names host {host!r}, which is not in deploy.hosts"
    if problem:
        raise ProtocolError("bad_value", f"{name!r} {show(text)} {problem}")
    return text


def warmup(name: str, value: Any, limits: Limits) -> Any:
    """Warm-up as the CLI's --warmup: a count of calls, or text "10", "2.5s" or "10,2.5s"."""
    if isinstance(value, str):
        if not _WARMUP.fullmatch(value):
            raise ProtocolError("bad_value", f"{name!r} {show(value)} must be a count (10), seconds (2s) "
                                             "or both (10,2s)")
        return value
    return integer(0, 1_000_000)(name, value, limits)


def one_or_more(check: Checker, most: int) -> Checker:
    """A checker for one value or a list of 1..most values (as the CLI's `B[,B]`); returns a list."""
    def check_all(name: str, value: Any, limits: Limits) -> List[Any]:
        values = value if isinstance(value, list) else [value]
        if not 0 < len(values) <= most:
            raise ProtocolError("bad_value", f"{name!r} must list 1..{most} values, not {len(values)}")
        return [check(name, item, limits) for item in values]
    return check_all


def backend_options(name: str, value: Any, limits: Limits) -> Dict[str, str]:
    """Backend options as the CLI's --option NAME=VALUE: {name: value}, both short safe words, the names
    among `REMOTE_OPTIONS`; the backend itself checks which names and values it takes."""
    if not isinstance(value, dict):
        raise _wrong_type(name, value, "an object of option name -> value")
    if len(value) > _MAX_OPTIONS:
        raise ProtocolError("bad_value", f"{name!r} has {len(value)} options, at most {_MAX_OPTIONS}")
    for key, item in value.items():
        if not _OPTION.fullmatch(key) or not _OPTION.fullmatch(_text(f"{name}.{key}", item)):
            raise ProtocolError("bad_value", f"option {show(key)}={show(item)} must be words of "
                                             "A-Z a-z 0-9 _ . : - (at most 64 characters)")
        if key not in REMOTE_OPTIONS:
            raise ProtocolError("bad_value", f"option {show(key)} cannot be set by a command "
                                             f"(those that can: {', '.join(sorted(REMOTE_OPTIONS))})")
    return value


def shape(name: str, value: Any, limits: Limits) -> Dict[str, Any]:
    """Input shapes as on the CLI's --shape: {input name: [dims]}, up to 16 inputs of rank <= 8."""
    if not isinstance(value, dict):
        raise _wrong_type(name, value, "an object of input name -> [dims]")
    if len(value) > _MAX_SHAPE_INPUTS:
        raise ProtocolError("bad_value", f"{name!r} names {len(value)} inputs, at most {_MAX_SHAPE_INPUTS}")
    for input_name, dims in value.items():
        if not 0 < len(input_name) <= 256 or "\0" in input_name:
            raise ProtocolError("bad_value", f"input name {show(input_name)} in {name!r} must be "
                                             "1-256 characters without NUL")
        if not isinstance(dims, list):
            raise _wrong_type(f"{name}.{input_name}", dims, "a list of dimensions")
        if not 0 < len(dims) <= _MAX_RANK:
            raise ProtocolError("bad_value", f"{name}.{input_name} must have 1..{_MAX_RANK} dimensions")
        for dim in dims:
            integer(1, 1_000_000)(f"{name}.{input_name}[]", dim, limits)
    return value


_BACKENDS = Arg(one_or_more(choice("onnxruntime", "tflite", "tensorrt", "auto"), 4))
_PRECISIONS = Arg(one_or_more(choice("fp32", "fp16", "int8"), 3))
_MODEL = Arg(model_name, required=True)
# The arguments of `edge-agent eval` (bench adds the latency loop's); --input is left out on purpose:
# it names a file on the device.
_EVAL_ARGS = {
    "model": _MODEL, "backend": _BACKENDS, "precision": _PRECISIONS, "threads": Arg(integer(1, 256)),
    "options": Arg(backend_options), "shape": Arg(shape), "batch": Arg(one_or_more(integer(1, 4096), 16)),
    "eval_limit": Arg(integer(1, 10_000_000)), "time_limit": Arg(number(1, 86_400)),
    "seed": Arg(integer(0, 2 ** 32 - 1)), "memory_limit_mb": Arg(integer(64, 1 << 20)),
}
_BENCH_ARGS = {**_EVAL_ARGS, "warmup": Arg(warmup), "iterations": Arg(integer(1, 10_000_000)),
               "min_seconds": Arg(number(0, 3600)), "rounds": Arg(integer(1, 100))}
_PROFILE_ARGS = {key: _BENCH_ARGS[key] for key in ("model", "backend", "precision", "threads", "options",
                                                   "shape", "batch", "iterations", "time_limit", "memory_limit_mb")}

COMMANDS: Dict[str, CommandSpec] = {
    "cancel": CommandSpec(0, {"target": Arg(check_command_id, required=True)}),
    "ping": CommandSpec(1, {}),
    "info": CommandSpec(1, {}),
    "models": CommandSpec(1, {}),
    "deploy": CommandSpec(5, {"url": Arg(download_url, required=True), "sha256": Arg(sha256, required=True),
                              "bytes": Arg(download_size, required=True),
                              "name": Arg(bundle_name, required=True)}),
    "bench": CommandSpec(10, _BENCH_ARGS),
    "eval": CommandSpec(10, _EVAL_ARGS),
    "profile": CommandSpec(10, {**_PROFILE_ARGS, "top": Arg(integer(1, 100_000))}),
    "select": CommandSpec(10, {"model": _MODEL, "budget": Arg(number(0, 100)),
                               "time_limit": Arg(number(1, 86_400)),
                               "objective": Arg(choice("p50", "p99", "throughput", "energy")),
                               "memory_limit_mb": _EVAL_ARGS["memory_limit_mb"]}),
}
