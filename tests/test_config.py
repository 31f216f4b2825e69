"""agent/config.py: real TOML files, EDGE_AGENT_* overrides, and errors that name the key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support.cli import run_cli

from agent.config import broker_password, load
from agent.errors import ConfigError

FULL = """
[device]
id = "jetson-01"
groups = ["lab", "orin"]

[mqtt]
host = "broker.example.com"
port = 8883
root = "acme/edge"
ca_file = "{ca}"
username = "jetson-01"
password_file = "{password}"
protocol = "5"
inflight = 4

[storage]
state_dir = "/var/lib/edge-agent"
model_dir = "/srv/models"

[telemetry]
interval_s = 2.5

[jobs]
queue_limit = 50
time_limit_s = 120
memory_limit_mb = 1024

[deploy]
http_hosts = ["models.lan"]
max_bytes = 1000000

[outbox]
max_messages = 500
"""


@pytest.fixture()
def full(tmp_path: Path) -> Path:
    (tmp_path / "ca.crt").write_text("not checked here")
    (tmp_path / "password").write_text("s3cret\nignored second line\n")
    path = tmp_path / "agent.toml"
    path.write_text(FULL.format(ca=tmp_path / "ca.crt", password=tmp_path / "password"))
    return path


def test_every_section_is_read(full: Path) -> None:
    config = load(full, {})
    assert (config.device.id, config.device.groups) == ("jetson-01", ("lab", "orin"))
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.root, config.mqtt.inflight) == (
        "broker.example.com", 8883, "acme/edge", 4)
    assert broker_password(config.mqtt) == "s3cret"
    assert config.model_dir == Path("/srv/models") and config.database == Path("/var/lib/edge-agent/agent.db")
    assert (config.telemetry.interval_s, config.jobs.queue_limit, config.jobs.memory_limit_mb) == (2.5, 50, 1024)
    assert (config.deploy.http_hosts, config.deploy.max_bytes, config.outbox.max_messages) == (
        ("models.lan",), 1000000, 500)
    assert config.source == full


def test_defaults_without_a_file() -> None:
    config = load(None, {})
    assert config.device.id == socket.gethostname() and config.mqtt.tls and not config.mqtt.insecure
    assert config.mqtt.port == 8883 and config.model_dir == Path("/var/lib/edge-agent/models")
    assert config.jobs.memory_limit_mb == "auto"


def test_environment_overrides_the_file(full: Path) -> None:
    config = load(full, {"EDGE_AGENT_MQTT_PORT": "1883", "EDGE_AGENT_MQTT_TLS": "off",
                         "EDGE_AGENT_DEVICE_GROUPS": "ops, lab", "EDGE_AGENT_TELEMETRY_INTERVAL_S": "0",
                         "EDGE_AGENT_MQTT_CA_FILE": "", "EDGE_AGENT_WORKER_HOOK": "x:y", "EDGE_AGENT_SLOW_COUNT": "3"})
    assert (config.mqtt.port, config.mqtt.tls, config.device.groups) == (1883, False, ("ops", "lab"))
    assert config.telemetry.interval_s == 0 and config.mqtt.ca_file is None


@pytest.mark.parametrize("edit,message", [
    (("port = 8883", "port = 70000"), "mqtt.port: must be an integer in 1..65535, not 70000"),
    (("port = 8883", 'port = "8883"'), "mqtt.port: must be an integer"),
    (("inflight = 4", "inflight = 4\ninflite = 5"), "unknown setting mqtt.inflite"),
    (('[outbox]', '[outbx]'), "unknown section [outbx]"),
    (('id = "jetson-01"', 'id = "all"'), "device.id: device id 'all' is reserved"),
    (('id = "jetson-01"', 'id = "a/b"'), "device.id: device id 'a/b' must be"),
    (('groups = ["lab", "orin"]', 'groups = ["lab", "x+"]'), "device.groups: group name 'x+'"),
    (('root = "acme/edge"', 'root = "acme/#"'), "mqtt.root"),
    (('protocol = "5"', 'protocol = "4"'), "mqtt.protocol: must be one of auto, 5, 3.1.1"),
    (('username = "jetson-01"', 'username = "jetson-01"\npassword = "x"'), "password and mqtt.password_file"),
    (('username = "jetson-01"', 'username = "jetson-01"\ncert_file = "/etc/hostname"'), "cert_file and mqtt.key_file"),
    (("memory_limit_mb = 1024", 'memory_limit_mb = "lots"'), "jobs.memory_limit_mb"),
    (("[jobs]", "[jobs\n"), "is not valid TOML"),
])
def test_bad_settings_are_refused_naming_the_key(full: Path, edit: tuple, message: str) -> None:
    full.write_text(full.read_text().replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load(full, {})
    assert message in str(caught.value)


@pytest.mark.parametrize("variable,value,message", [
    ("EDGE_AGENT_MQTT_PORT", "x", "environment EDGE_AGENT_MQTT_PORT (mqtt.port): must be an integer"),
    ("EDGE_AGENT_MQTT_HOTS", "h", "no setting mqtt.hots"),
    ("EDGE_AGENT_MQTT_TLS", "maybe", "must be true or false"),
    ("EDGE_AGENT_JOBS_TIME_LIMIT_S", "nan", "jobs.time_limit_s"),
])
def test_bad_environment_values_name_the_variable(full: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(full, {variable: value})


def test_missing_files_are_reported(tmp_path: Path, full: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="mqtt.password_file: .* is not a file"):
        load(full, {"EDGE_AGENT_MQTT_PASSWORD_FILE": str(tmp_path / "gone")})


def test_run_refuses_a_bad_configuration_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[mqtt]\nport = 0\n")
    result = run_cli("run", "--config", str(path))
    assert result.code == 2 and result.stderr.strip().splitlines() == [
        f"edge-agent: error: {path}: mqtt.port: must be an integer in 1..65535, not 0"]


def test_the_settings_survive_the_trip_to_the_job_process(full: Path) -> None:
    import json

    from agent.config import from_document, to_document

    config = load(full, {"EDGE_AGENT_JOBS_MEMORY_LIMIT_MB": "512", "EDGE_AGENT_DEVICE_GROUPS": "a,b"})
    again = from_document(json.loads(json.dumps(to_document(config))), {}, "the daemon", config.source)
    assert again == config and again.jobs.memory_limit_mb == 512 and again.device.groups == ("a", "b")
    assert from_document(to_document(load(None, {})), {}, "defaults") == load(None, {})


def test_the_local_profile_needs_no_file_and_a_file_still_wins(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    local = load(None, environ={}, profile="local")
    assert (local.mqtt.host, local.mqtt.port, local.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert local.storage.state_dir == tmp_path / "edge-agent" and local.profile == "local"
    override = tmp_path / "agent.toml"
    override.write_text('[mqtt]\nport = 1999\n[device]\nid = "bench-3"\n')
    config = load(override, environ={}, profile="local")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls, config.device.id) == ("127.0.0.1", 1999, False,
                                                                                      "bench-3")
    with pytest.raises(ConfigError, match="unknown profile"):
        load(None, environ={}, profile="cloud")
