"""The daemon's settings: `/etc/edge-agent/agent.toml`, overridden by `EDGE_AGENT_*` variables.

Every setting is declared once below, in its section's dataclass, with its default and its check;
`load` reads the file, applies the environment (`EDGE_AGENT_<SECTION>_<KEY>`, e.g.
`EDGE_AGENT_MQTT_HOST`; lists are comma-separated there) and validates everything in one pass, so
a bad value stops the agent at start with a `ConfigError` that names the key and where it came
from. Unknown keys in the file are errors (a misspelt key must not silently fall back to its
default); unknown `EDGE_AGENT_*` variables are left alone unless they start with a section's name.
See docs/daemon.md for the keys.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from agent.errors import AgentError, ConfigError

DEFAULT_PATH = Path("/etc/edge-agent/agent.toml")
ENV_PREFIX = "EDGE_AGENT_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

Parser = Callable[[str, Any, bool], Any]  # (key, value, value came from the environment) -> checked value

# What a board may be called on the broker: its id and group names are topic levels, the root one or more.
RESERVED_DEVICE_IDS = frozenset({"all", "group"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ROOT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def setting(default: Any, parse: Parser) -> Any:
    """A dataclass field with its default and the parser that checks a value for it (see parse_section)."""
    return field(default=default, metadata={"parse": parse})


def _bad(key: str, problem: str, value: Any) -> ConfigError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ConfigError(f"{key}: {problem}, not {shown}")


def text(key: str, value: Any, from_env: bool) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise _bad(key, "must be a non-empty string", value)
    return value


def path(key: str, value: Any, from_env: bool) -> Path:
    """A file or folder path."""
    return Path(text(key, value, from_env))


def optional_path(key: str, value: Any, from_env: bool) -> Optional[Path]:
    """A file or folder path; an empty string (in the environment) means none."""
    return None if value == "" and from_env else path(key, value, from_env)


def boolean(key: str, value: Any, from_env: bool) -> bool:
    """true/false (in the environment also 1/0, yes/no, on/off)."""
    if from_env and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    if not isinstance(value, bool):
        raise _bad(key, "must be true or false", value)
    return value


def integer(low: int, high: int) -> Parser:
    """A whole number in [low, high]."""
    def parse(key: str, value: Any, from_env: bool) -> int:
        if from_env and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(key, f"must be an integer in {low}..{high}", value)
        return value
    return parse


def number(low: float, high: float) -> Parser:
    """A number in [low, high]."""
    def parse(key: str, value: Any, from_env: bool) -> float:
        if from_env and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _bad(key, f"must be a number in {low:g}..{high:g}", value)
        return float(value)
    return parse


def choice(*allowed: str) -> Parser:
    """One string out of a fixed set."""
    def parse(key: str, value: Any, from_env: bool) -> str:
        if value not in allowed:
            raise _bad(key, f"must be one of {', '.join(allowed)}", value)
        return str(value)
    return parse


def words(check: Optional[Callable[[str], str]] = None) -> Parser:
    """A list of strings (comma-separated in the environment), each passed through `check`."""
    def parse(key: str, value: Any, from_env: bool) -> Tuple[str, ...]:
        if from_env and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise _bad(key, "must be a list of non-empty strings", value)
        try:
            return tuple(check(item) if check else item for item in value)
        except AgentError as error:
            raise ConfigError(f"{key}: {error}") from None
    return parse


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def name_problem(value: object, what: str) -> Optional[str]:
    """Why `value` cannot be a device id or group name (None: it can): 1-64 of A-Z a-z 0-9 _ . -
    starting with a letter or digit, so it is one safe topic level (no + # /); device ids other than
    `all` and `group`, which would collide with the broadcast and group topics."""
    if what == "device id" and value in RESERVED_DEVICE_IDS:
        return f"device id {value!r} is reserved for group and broadcast topics"
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        return f"{what} {_short(value)} must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit"
    return None


def root_problem(value: object) -> Optional[str]:
    """Why `value` cannot be the topic root (None: it can): levels of A-Z a-z 0-9 _ . - separated by /."""
    if isinstance(value, str) and _ROOT.fullmatch(value):
        return None
    return f"topic root {_short(value)} must be levels of A-Z a-z 0-9 _ . - separated by /"


def _device_id(key: str, value: Any, from_env: bool) -> str:
    problem = name_problem(text(key, value, from_env), "device id")
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return str(value)


def _group(name: str) -> str:
    problem = name_problem(name, "group name")
    if problem:
        raise ConfigError(problem)
    return name


def _memory_limit(key: str, value: Any, from_env: bool) -> Union[str, int]:
    if value == "auto":
        return "auto"
    return integer(0, 1 << 30)(key, value, from_env)


@dataclass(frozen=True)
class DeviceSettings:
    """[device]: who this board is on the broker."""

    id: str = setting("", _device_id)  # "" = this machine's hostname
    groups: Tuple[str, ...] = setting((), words(_group))


@dataclass(frozen=True)
class MqttSettings:
    """[mqtt]: the broker and how to reach it."""

    host: str = setting("localhost", text)
    port: int = setting(8883, integer(1, 65535))
    root: str = setting("edge", text)
    tls: bool = setting(True, boolean)
    ca_file: Optional[Path] = setting(None, optional_path)  # None: the system's CA store
    cert_file: Optional[Path] = setting(None, optional_path)
    key_file: Optional[Path] = setting(None, optional_path)
    insecure: bool = setting(False, boolean)  # true skips the broker hostname check: never in production
    username: Optional[str] = setting(None, text)  # None: the device id (the agent), anonymous (fleet)
    password: Optional[str] = setting(None, text)
    password_file: Optional[Path] = setting(None, optional_path)
    protocol: str = setting("auto", choice("auto", "5", "3.1.1"))
    keepalive_s: int = setting(30, integer(5, 3600))
    session_expiry_s: int = setting(7 * 86400, integer(0, 2 ** 32 - 1))
    reconnect_min_s: float = setting(0.5, number(0.05, 600))
    reconnect_max_s: float = setting(60.0, number(0.1, 3600))
    inflight: int = setting(16, integer(1, 1000))
    max_payload_bytes: int = setting(64 * 1024, integer(256, 16 * 1024 * 1024))


@dataclass(frozen=True)
class StorageSettings:
    """[storage]: where the agent keeps its state database and its model store."""

    state_dir: Path = setting(Path("/var/lib/edge-agent"), path)
    model_dir: Optional[Path] = setting(None, optional_path)  # None: <state_dir>/models


@dataclass(frozen=True)
class TelemetrySettings:
    """[telemetry]: how often board readings are published (0 turns them off)."""

    interval_s: float = setting(10.0, number(0, 86400))


@dataclass(frozen=True)
class JobSettings:
    """[jobs]: the queue and the limits of each measurement worker."""

    queue_limit: int = setting(256, integer(1, 100_000))
    time_limit_s: float = setting(300.0, number(1, 86400))
    memory_limit_mb: Union[str, int] = setting("auto", _memory_limit)  # 0: none; auto: see docs/daemon.md
    stop_grace_s: float = setting(10.0, number(0, 3600))
    remember_days: float = setting(7.0, number(0.001, 3650))
    max_rejected_ids: int = setting(5_000, integer(10, 10_000_000))  # ids of rejected commands kept, at most


@dataclass(frozen=True)
class DeploySettings:
    """[deploy]: where bundles may be downloaded from, and how big they may be."""

    hosts: Tuple[str, ...] = setting((), words())  # https hosts allowed; () any public one
    http_hosts: Tuple[str, ...] = setting((), words())  # also over plain http
    max_bytes: int = setting(4 * 1024 ** 3, integer(1, 1 << 50))
    max_unpacked_bytes: int = setting(8 * 1024 ** 3, integer(1, 1 << 50))
    max_unpack_ratio: float = setting(20.0, number(1, 1_000_000))  # unpacked / archive bytes
    min_free_bytes: int = setting(256 * 1024 ** 2, integer(0, 1 << 50))  # left free on the model store's disk
    timeout_s: float = setting(60.0, number(1, 3600))


@dataclass(frozen=True)
class OutboxSettings:
    """[outbox]: the cap of unsent messages (oldest telemetry goes first, never results)."""

    max_messages: int = setting(10_000, integer(10, 10_000_000))
    max_bytes: int = setting(32 * 1024 * 1024, integer(64 * 1024, 1 << 40))


@dataclass(frozen=True)
class Config:
    """Every setting of the agent, checked; `source` is the file it came from (None: defaults only)."""

    device: DeviceSettings = DeviceSettings()
    mqtt: MqttSettings = MqttSettings()
    storage: StorageSettings = StorageSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    jobs: JobSettings = JobSettings()
    deploy: DeploySettings = DeploySettings()
    outbox: OutboxSettings = OutboxSettings()
    source: Optional[Path] = None
    profile: Optional[str] = None  # "local": the defaults of `edge-agent run --local`

    @property
    def model_dir(self) -> Path:
        """The model store."""
        return self.storage.model_dir or self.storage.state_dir / "models"

    @property
    def database(self) -> Path:
        """The SQLite file of jobs and the outbox."""
        return self.storage.state_dir / "agent.db"


_SECTION_TYPES = {"device": DeviceSettings, "mqtt": MqttSettings, "storage": StorageSettings,
                  "telemetry": TelemetrySettings, "jobs": JobSettings, "deploy": DeploySettings,
                  "outbox": OutboxSettings}


def read_toml(path: Path) -> Dict[str, Any]:
    """The TOML document at `path` (tomllib on Python 3.11+, tomli before), or a ConfigError."""
    if sys.version_info >= (3, 11):
        import tomllib as toml  # novermin (guarded by the version check)
    else:
        try:
            import tomli as toml
        except ImportError:
            raise ConfigError("reading agent.toml needs the tomli package on Python < 3.11 "
                              "(pip install 'edge-agent[mqtt]')") from None
    try:
        with open(path, "rb") as handle:
            return dict(toml.load(handle))
    except OSError as error:
        raise ConfigError(f"cannot read the configuration {path}: {error.strerror}") from None
    except toml.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def parse_section(name: str, table: Mapping[str, Any], environ: Mapping[str, str], where: str,
                  cls: Optional[type] = None, env_prefix: str = ENV_PREFIX) -> Any:
    """One section's settings (the agent's, or `cls` for another service's file) from its TOML table and the
    environment (which wins)."""
    cls = cls or _SECTION_TYPES[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    known = {item.name: item for item in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {name}.{key} (known: {', '.join(sorted(known))})")
    prefix = f"{env_prefix}{name.upper()}_"
    for variable in environ:
        if variable.startswith(prefix) and variable[len(prefix):].lower() not in known:
            raise ConfigError(f"environment {variable}: no setting {name}.{variable[len(prefix):].lower()} "
                              f"(known: {', '.join(sorted(known))})")
    values = {}
    for key, item in known.items():
        variable = prefix + key.upper()
        if variable in environ:
            values[key] = item.metadata["parse"](f"environment {variable} ({name}.{key})", environ[variable], True)
        elif key in table:
            values[key] = item.metadata["parse"](f"{where}: {name}.{key}", table[key], False)
    return cls(**values)


def local_profile() -> Dict[str, Dict[str, Any]]:
    """The settings of `edge-agent run --local`: a broker on 127.0.0.1:1883 without TLS or a password (the
    quickstart's, scripts/fleet-demo), state under ~/.local/state/edge-agent, and the checkout's models/ as
    the model store when there is one."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "edge-agent"
    storage: Dict[str, Any] = {"state_dir": str(state)}
    checkout_models = Path(__file__).resolve().parents[1] / "models"
    if checkout_models.is_dir():
        storage["model_dir"] = str(checkout_models)
    return {"mqtt": {"host": "127.0.0.1", "port": 1883, "tls": False}, "storage": storage}


def load(path: Optional[Union[str, Path]] = DEFAULT_PATH, environ: Optional[Mapping[str, str]] = None,
         profile: Optional[str] = None) -> Config:
    """Read, override and validate every setting; `path=None` starts from the defaults alone, `profile="local"`
    from the local profile's (the file's settings still win)."""
    env = dict(os.environ if environ is None else environ)
    document: Dict[str, Any] = {} if path is None else read_toml(Path(path))
    if profile is not None:
        if profile != "local":
            raise ConfigError(f"unknown profile {profile!r} (known: local)")
        base = local_profile()
        for name, values in document.items():
            base[name] = dict(base.get(name, {}), **values) if isinstance(values, dict) else values
        document = base
    where = str(path) if path is not None else f"the {profile} profile" if profile else "defaults"
    return replace(from_document(document, env, where, None if path is None else Path(path)), profile=profile)


def from_document(document: Mapping[str, Any], environ: Mapping[str, str], where: str,
                  source: Optional[Path] = None) -> Config:
    """Every setting from a TOML-shaped document (sections of key = value) and the environment, checked."""
    for name in document:
        if name not in _SECTION_TYPES:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(_SECTION_TYPES)})")
    sections = {name: parse_section(name, document.get(name, {}), environ, where) for name in _SECTION_TYPES}
    return _complete(Config(**sections, source=source))


def to_document(config: Config) -> Dict[str, Dict[str, Any]]:
    """The settings as a JSON-ready document that `from_document` reads back into the same `Config` (what
    the daemon hands its job process); unset optional settings are left out."""
    document: Dict[str, Dict[str, Any]] = {}
    for name in _SECTION_TYPES:
        section = getattr(config, name)
        document[name] = {item.name: _plain(getattr(section, item.name)) for item in fields(section)
                          if getattr(section, item.name) is not None}
    return document


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _complete(config: Config) -> Config:
    """Fill the defaults that depend on other settings and check settings against each other."""
    device = config.device
    if not device.id:
        device = replace(device, id=_device_id("device.id (default: the hostname)", socket.gethostname(), False))
    mqtt = config.mqtt
    if mqtt.password is not None and mqtt.password_file is not None:
        raise ConfigError("mqtt.password and mqtt.password_file are both set: keep one")
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        raise ConfigError("mqtt.cert_file and mqtt.key_file go together: set both or neither")
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        raise ConfigError("mqtt.reconnect_min_s is above mqtt.reconnect_max_s")
    for name in ("ca_file", "cert_file", "key_file", "password_file"):
        file = getattr(mqtt, name)
        if file is not None and not file.is_file():
            raise ConfigError(f"mqtt.{name}: {file} is not a file")
    problem = root_problem(mqtt.root)
    if problem:
        raise ConfigError(f"mqtt.root: {problem}")
    return replace(config, device=device, mqtt=mqtt)


def broker_password(mqtt: MqttSettings) -> Optional[str]:
    """The broker password: `password`, or the first line of `password_file` (read now, so a
    rotated file is picked up at the next connection)."""
    if mqtt.password_file is None:
        return mqtt.password
    try:
        return mqtt.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as error:
        raise ConfigError(f"mqtt.password_file: cannot read a password from {mqtt.password_file}: {error}") from None
