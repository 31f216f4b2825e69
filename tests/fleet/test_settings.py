"""agent/fleet/settings.py: the coordinator's file and EDGE_COORDINATOR_* variables, checked like the agent's
(one line naming the key), the sample in deploy/ loads, tokens are stored as hashes only, and the local
profile makes its operator token once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from support.cli import run_cli

from agent.errors import ConfigError
from agent.fleet.http import local_token_file
from agent.fleet.settings import hash_token, load

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "coordinator.toml"


def test_the_sample_loads_with_the_documented_defaults() -> None:
    config = load(SAMPLE, environ={})
    assert config.mqtt.username == "coordinator" and config.mqtt.host == "broker.example.com"
    assert config.api.host == "127.0.0.1" and config.api.tokens == ()
    assert config.jobs.offline == "wait" and config.regressions.min_baseline <= config.regressions.baseline_results


def test_tokens_roles_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(f'[database]\nurl = "fleet.db"\n[[api.tokens]]\nname = "ops"\nrole = "operator"\n'
                    f'sha256 = "{hash_token("secret")}"\n')
    config = load(path, environ={"EDGE_COORDINATOR_API_PORT": "9000"})
    assert config.api.port == 9000
    assert [(token.name, token.role, token.sha256) for token in config.api.tokens] == [
        ("ops", "operator", hash_token("secret"))]
    assert config.database.url == str(tmp_path / "fleet.db")  # relative to the file, not the working folder


@pytest.mark.parametrize("text, named", [
    ('[api]\nport = "x"\n', "api.port"),
    ('[apis]\n', "[apis]"),
    ('[jobs]\noffline = "maybe"\n', "jobs.offline"),
    ('[[api.tokens]]\nname = "ops"\nrole = "admin"\nsha256 = "' + "0" * 64 + '"\n', "role"),
    ('[[api.tokens]]\nname = "ops"\nrole = "read"\nsha256 = "plaintext"\n', "sha256"),
    ('[[api.tokens]]\nname = "ops"\nrole = "read"\ntoken = "plaintext"\n', "api.tokens[0]"),
    ('[regressions]\nbaseline_results = 3\nmin_baseline = 5\n', "min_baseline"),
])
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load(path, environ={})
    assert named in str(refused.value) and "\n" not in str(refused.value)


def test_the_local_profile_makes_one_private_operator_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = load(None, environ={}, profile="local")
    token_file = local_token_file()
    assert token_file.parent == tmp_path / "edge-agent-coordinator"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (first.mqtt.host, first.mqtt.port, first.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert first.database.url == str(tmp_path / "edge-agent-coordinator" / "coordinator.db")
    assert first.dashboard.secret_file == str(tmp_path / "edge-agent-coordinator" / "dashboard.secret")
    assert [token.sha256 for token in first.api.tokens] == [hash_token(token_file.read_text().strip())]
    again = load(None, environ={}, profile="local")
    assert again.api.tokens == first.api.tokens


def test_new_token_prints_a_block_the_config_takes(tmp_path: Path) -> None:
    made = run_cli("coordinator", "--new-token", "ops", "--role", "operator")
    assert made.code == 0, made.stderr
    token = made.stderr.strip().rsplit(" ", 1)[1]
    path = tmp_path / "coordinator.toml"
    path.write_text(made.stdout)
    (configured,) = load(path, environ={}).api.tokens
    assert (configured.name, configured.role, configured.sha256) == ("ops", "operator", hash_token(token))
    assert token not in made.stdout  # only its hash goes into the file
