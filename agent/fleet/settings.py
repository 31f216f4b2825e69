"""The coordinator's settings: /etc/edge-agent/coordinator.toml (sample: deploy/coordinator.toml).

Sections `[mqtt]` (the agent's `MqttSettings`; the username defaults to `coordinator`), `[cluster]`,
`[database]`, `[api]`, `[dashboard]`, `[regressions]` and `[jobs]`, each key overridable by
`EDGE_COORDINATOR_<SECTION>_<KEY>`, checked
like the agent's file (agent/config.py): an unknown section or key, or a bad value, is one ConfigError line.
API tokens are stored as their SHA-256 only (`edge-agent coordinator hash-token` makes one).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from agent.config import (
    MqttSettings,
    boolean,
    choice,
    integer,
    name_problem,
    number,
    parse_section,
    read_toml,
    setting,
    text,
)
from agent.errors import ConfigError
from agent.fleet.http import local_token_file

ENV_PREFIX = "EDGE_COORDINATOR_"
DEFAULT_PATH = Path("/etc/edge-agent/coordinator.toml")
ROLES = ("read", "operator")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class DatabaseSettings:
    """[database]: where results are kept and how much telemetry and how large a message."""

    url: str = setting("/var/lib/edge-agent-coordinator/coordinator.db", text)  # a path (SQLite) or a URL
    telemetry_max_age_s: float = setting(7 * 86400.0, number(0, 10 * 365 * 86400.0))  # 0: no age bound
    telemetry_max_count: int = setting(10_000, integer(0, 10 ** 9))  # per board; 0: no count bound
    max_payload_bytes: int = setting(4 * 1024 * 1024, integer(1024, 64 * 1024 * 1024))
    batch_max: int = setting(200, integer(1, 10_000))  # messages waiting are stored in one transaction, up to this
    sqlite_busy_timeout_s: float = setting(10.0, number(0.1, 3600))  # a write waits this long for another writer
    retry_max_s: float = setting(2.0, number(0.1, 300))  # the longest wait between tries while it is unavailable


def _optional_name(key: str, value: Any, from_env: bool) -> str:
    """Empty, or one topic level / client id part (`agent.config.name_problem`)."""
    problem = None if value == "" else name_problem(value, "name")
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return str(value)


@dataclass(frozen=True)
class ClusterSettings:
    """[cluster]: several coordinators sharing one database and the boards' messages (docs/fleet.md)."""

    share_group: str = setting("", _optional_name)  # subscribe as $share/<group>/...: each message to one of them
    instance: str = setting("", _optional_name)  # this coordinator's name in its client id; empty: the hostname


@dataclass(frozen=True)
class ApiToken:
    """One bearer token of the HTTP API: its name (shown in logs and jobs), role, and SHA-256 hex digest."""

    name: str
    role: str
    sha256: str


def _tokens(key: str, value: Any, from_env: bool) -> Tuple[ApiToken, ...]:
    """`[[api.tokens]]` tables of name, role (read / operator) and sha256 (never the token itself)."""
    if from_env:
        raise ConfigError(f"{key}: tokens are set in the file only, as [[api.tokens]] tables")
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of [[api.tokens]] tables")
    tokens = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "role", "sha256"}:
            raise ConfigError(f"{where}: a token is a table of exactly name, role and sha256")
        if not isinstance(item["name"], str) or not _TOKEN_NAME.fullmatch(item["name"]):
            raise ConfigError(f"{where}.name: {item['name']!r} is not a name (letters, digits, _ . -)")
        if item["role"] not in ROLES:
            raise ConfigError(f"{where}.role: must be one of {', '.join(ROLES)}, not {item['role']!r}")
        if not isinstance(item["sha256"], str) or not _SHA256.fullmatch(item["sha256"]):
            raise ConfigError(f"{where}.sha256: must be 64 lowercase hex digits (edge-agent coordinator hash-token)")
        tokens.append(ApiToken(item["name"], item["role"], item["sha256"]))
    if len({token.name for token in tokens}) != len(tokens):
        raise ConfigError(f"{key}: two tokens share a name")
    return tuple(tokens)


@dataclass(frozen=True)
class ApiSettings:
    """[api]: where the HTTP API listens and who may use it."""

    host: str = setting("127.0.0.1", text)
    port: int = setting(8470, integer(0, 65535))  # 0: any free port (tests)
    tokens: Tuple[ApiToken, ...] = setting((), _tokens)
    metrics_public: bool = setting(True, boolean)  # /metrics without a token (a Prometheus scrape)


@dataclass(frozen=True)
class DashboardSettings:
    """[dashboard]: the web pages served beside the API; operators log in with an API token."""

    enabled: bool = setting(True, boolean)
    session_hours: float = setting(8.0, number(0.01, 24 * 30))  # a login lasts this long
    secure_cookie: bool = setting(False, boolean)  # send the session cookie over HTTPS only (behind a TLS proxy)
    secret_file: str = setting("", text)  # the key sessions are signed with; empty: a new one per start


@dataclass(frozen=True)
class RegressionSettings:
    """[regressions]: the baseline (the last `baseline_results` stable results of a configuration, at least
    `min_baseline` of them) and how far a new result may fall from its median before it is an alert."""

    baseline_results: int = setting(10, integer(2, 1000))
    min_baseline: int = setting(3, integer(2, 1000))
    p50_pct: float = setting(10.0, number(0.1, 1000))  # slower by more than this % of the baseline median
    p99_pct: float = setting(25.0, number(0.1, 1000))
    top1_points: float = setting(1.0, number(0.0, 100))  # lower by more than this many points (%)
    fidelity_points: float = setting(1.0, number(0.0, 100))
    mad_k: float = setting(3.0, number(0.0, 100))  # and by more than k robust deviations of the baseline


@dataclass(frozen=True)
class JobSettings:
    """[jobs]: how long a fleet job waits for its boards, and what an offline board gets."""

    timeout_s: float = setting(900.0, number(1, 30 * 86400.0))  # boards not final by then: timed_out
    offline: str = setting("wait", choice("wait", "fail"))  # wait: sent when it returns; fail: offline at once


@dataclass(frozen=True)
class CoordinatorConfig:
    """Every setting of the coordinator, checked; `source` is the file it came from (None: defaults only)."""

    mqtt: MqttSettings = MqttSettings(username="coordinator")
    cluster: ClusterSettings = ClusterSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    dashboard: DashboardSettings = DashboardSettings()
    regressions: RegressionSettings = RegressionSettings()
    jobs: JobSettings = JobSettings()
    source: Optional[Path] = None


_SECTION_TYPES: Dict[str, type] = {"mqtt": MqttSettings, "cluster": ClusterSettings, "database": DatabaseSettings,
                                   "api": ApiSettings, "dashboard": DashboardSettings,
                                   "regressions": RegressionSettings, "jobs": JobSettings}


def local_state() -> Path:
    """Where the local profile keeps the coordinator's database and its operator token."""
    return local_token_file().parent


def local_token() -> ApiToken:
    """The local profile's operator token: made (0600) on first use, then read; only its hash is configured."""
    path = local_token_file()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return ApiToken("local-operator", "operator", hash_token(path.read_text(encoding="utf-8").strip()))


def load(path: Optional[Union[str, Path]] = DEFAULT_PATH, environ: Optional[Mapping[str, str]] = None,
         profile: Optional[str] = None) -> CoordinatorConfig:
    """Read, override and validate the coordinator's settings; `path=None` starts from the defaults alone,
    `profile="local"` from the local profile's: a broker on 127.0.0.1:1883 without TLS, the database, an
    operator token (`local_token`) and the dashboard's session key under ~/.local/state/edge-agent-coordinator."""
    env = dict(os.environ if environ is None else environ)
    document: Dict[str, Any] = {} if path is None else read_toml(Path(path))
    where = str(path) if path is not None else f"the {profile} profile" if profile else "defaults"
    if profile is not None:
        if profile != "local":
            raise ConfigError(f"unknown profile {profile!r} (known: local)")
        base: Dict[str, Any] = {"mqtt": {"host": "127.0.0.1", "port": 1883, "tls": False},
                                "database": {"url": str(local_state() / "coordinator.db")},
                                "dashboard": {"secret_file": str(local_state() / "dashboard.secret")}}
        for name, values in document.items():
            base[name] = dict(base.get(name, {}), **values) if isinstance(values, dict) else values
        document = base
    for name in document:
        if name not in _SECTION_TYPES:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(_SECTION_TYPES)})")
    mqtt_table = dict(document.get("mqtt", {}))
    mqtt_table.setdefault("username", "coordinator")
    sections = {name: parse_section(name, mqtt_table if name == "mqtt" else document.get(name, {}), env, where,
                                    cls=cls, env_prefix=ENV_PREFIX)
                for name, cls in _SECTION_TYPES.items()}
    config = CoordinatorConfig(**sections, source=None if path is None else Path(path))
    if profile is not None:
        config = replace(config, api=replace(config.api, tokens=config.api.tokens + (local_token(),)))
    if config.regressions.min_baseline > config.regressions.baseline_results:
        raise ConfigError(f"{where}: regressions.min_baseline ({config.regressions.min_baseline}) is more than "
                          f"regressions.baseline_results ({config.regressions.baseline_results})")
    return _relative_to(config, None if path is None else Path(path).parent)


def _relative_to(config: CoordinatorConfig, folder: Optional[Path]) -> CoordinatorConfig:
    """A relative SQLite path in the file is taken from the file's folder, not the working directory."""
    url = config.database.url
    if folder is None or "://" in url or Path(url).is_absolute():
        return config
    return replace(config, database=replace(config.database, url=str(folder / url)))


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token is stored as in the config."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
