"""The dashboard's queries (agent/fleet/dashboard/views.py) on a real SQLite file and a real PostgreSQL, fed real
messages through ingest (real bench reports of models/digits on this machine and on a captured Orin Nano, a real
profile report), and its sessions (agent/fleet/sessions.py): forged, expired and revoked cookies, CSRF, throttle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
from support.cli import run_cli
from support.fleet import RealReports, at, bench_result, status, telemetry

from agent.fleet.dashboard import views
from agent.fleet.dashboard.pages import sparkline
from agent.fleet.ingest import ingest
from agent.fleet.sessions import LoginThrottle, Sessions, csrf_ok, session_key
from agent.fleet.settings import ApiToken, hash_token
from agent.fleet.store.database import Store


@pytest.fixture(scope="session")
def profile_report(digits: Path) -> Dict[str, Any]:
    """A real `edge-agent profile` report of models/digits on ONNX Runtime."""
    done = run_cli("profile", str(digits), "--backend", "onnxruntime", "--precision", "fp32", "--iterations", "20",
                   "--json")
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)[0]


def readings(temperature: float, throttled: bool) -> Dict[str, Any]:
    return {"load": [0.5, 0.4, 0.3], "memory_mb": {"total": 8000.0, "available": 5000.0},
            "temperature_c": {"cpu-thermal": temperature}, "max_temperature_c": temperature,
            "cpu_mhz": {"mean": 1500.0, "max": 1800.0}, "throttled": throttled, "throttle_reasons": [],
            "power_w": {"VDD_IN": 5.5}}


@pytest.fixture
def fleet(store: Store, real: RealReports, profile_report: Dict[str, Any]) -> Store:
    """Two boards online, one offline; telemetry on board-a; benches on a and b; a profile on a."""
    messages = [status("board-a", "online", 0, ["lab"]), status("board-b", "online", 0, ["shelf"]),
                status("board-c", "offline", 0, ["lab"]),
                *[telemetry("board-a", readings(50.0 + step, step == 2), 10 + step) for step in range(3)],
                bench_result("board-a", real.host, "bench-a", 20), bench_result("board-b", real.orin[0], "bench-b", 21),
                bench_result("board-a", [profile_report], "profile-a", 22, cmd="profile")]
    for number, (topic, payload) in enumerate(messages):
        assert ingest(store, topic, payload, received_at=at(30 + number)).outcome in ("stored", "seen")
    return store


def test_the_overview_counts_filters_pages_and_draws_the_telemetry(fleet: Store) -> None:
    everything = views.overview(fleet, views.BoardFilters())
    assert (everything.total, everything.matched, everything.counts) == (3, 3, {"online": 2, "offline": 1})
    assert everything.groups == ["lab", "shelf"]
    first = everything.rows[0]
    assert first.device_id == "board-a" and first.temperatures == [50.0, 51.0, 52.0]
    assert (first.temperature_c, first.throttled) == (52.0, True)
    assert any(runtime.startswith("onnxruntime ") for runtime in first.runtimes) or first.runtimes == []
    lab_online = views.overview(fleet, views.BoardFilters(group="lab", state="online"))
    assert [row.device_id for row in lab_online.rows] == ["board-a"]
    paged = views.overview(fleet, views.BoardFilters(), page=2, per_page=2)
    assert (paged.pages, [row.device_id for row in paged.rows]) == (2, ["board-c"])
    assert views.overview(fleet, views.BoardFilters(search="-B")).matched == 1
    points = sparkline([50.0, 51.0, 52.0], width=96, height=22).split()
    assert points[0] == "0.0,21.0" and points[-1] == "96.0,1.0"


def test_a_board_page_has_its_series_results_and_no_decision(fleet: Store) -> None:
    page = views.board_page(fleet, "board-a")
    assert page is not None
    assert [series.label for series in page.temperatures] == ["cpu-thermal", "hottest"]
    assert [value for _, value in page.temperatures[0].points] == [50.0, 51.0, 52.0]
    assert page.memory[0].points[-1][1] == 3000.0 and page.power[0].label == "VDD_IN"
    assert [result.command_id for result in page.results] == ["profile-a", "bench-a"]
    assert page.decisions == [] and views.board_page(fleet, "nobody") is None


def test_the_model_page_matrix_percentiles_and_compare(fleet: Store, real: RealReports) -> None:
    sha = real.orin[0][0]["model"]["sha256"]  # the TFLite FP32 file: benched on board-a (this host) and board-b
    assert sha in [model.sha256 for model in views.models(fleet)]
    page = views.model_page(fleet, sha)
    assert page is not None and {row.device_id for row in page.rows} == {"board-a", "board-b"}
    for row, charted in zip(page.rows, page.percentiles):
        assert charted.measurement_id == row.measurement_id
        assert charted.values["p50_ms"] == pytest.approx(row.p50_ms)
        values = charted.values
        assert values["min_ms"] <= values["p50_ms"] <= values["p99_ms"] <= values["max_ms"]
    a, b = page.rows[0], page.rows[-1]
    compared = views.compare(fleet, a.measurement_id, b.measurement_id)
    assert compared is not None
    p50 = next(delta for delta in compared.deltas if delta.measure == "latency p50_ms")
    assert p50.speedup == pytest.approx(a.p50_ms / b.p50_ms) and p50.delta == pytest.approx(b.p50_ms - a.p50_ms)
    assert views.compare(fleet, a.measurement_id, 10 ** 9) is None and views.model_page(fleet, "0" * 64) is None


def test_a_profile_result_has_its_layers_and_roofline(fleet: Store, profile_report: Dict[str, Any]) -> None:
    page = views.result_page(fleet, "board-a", "profile-a")
    assert page is not None and len(page.profiles) == 1
    profile = page.profiles[0]
    assert [layer.name for layer in profile.layers] == [layer["name"] for layer in profile_report["profile"]["layers"]]
    assert sum(layer.macs or 0 for layer in profile.layers) == profile_report["profile"]["totals"]["macs"]
    assert profile.roofline is not None and profile.roofline.compute and profile.roofline.memory
    assert all(intensity > 0 and gflops > 0 for _, intensity, gflops in profile.roofline.points)


TOKENS = (ApiToken("ops", "operator", hash_token("secret-op")), ApiToken("viewer", "read", hash_token("secret-rd")))


def test_sessions_are_signed_expire_and_end_with_their_token(tmp_path: Path) -> None:
    sessions = Sessions(TOKENS, session_key(str(tmp_path / "key")), lifetime_s=60)
    assert sessions.open("not a token") is None
    cookie = sessions.open("secret-op", now=1000.0)
    assert cookie is not None
    login = sessions.check(cookie, now=1030.0)
    assert login is not None and login.token.role == "operator"
    assert sessions.check(cookie, now=1061.0) is None  # expired
    name, expires, nonce, mac = cookie.split(":")
    assert sessions.check(f"viewer:{expires}:{nonce}:{mac}", now=1030.0) is None  # another name, same MAC
    assert sessions.check(f"{name}:{int(expires) + 999}:{nonce}:{mac}", now=1030.0) is None  # a longer life
    assert Sessions(TOKENS[1:], sessions.key, 60).check(cookie, now=1030.0) is None  # the token was removed
    assert Sessions(TOKENS, session_key(str(tmp_path / "key")), 60).check(cookie, now=1030.0) is not None  # same key
    assert csrf_ok(login, login.csrf) and not csrf_ok(login, None) and not csrf_ok(login, "0" * 64)
    other = sessions.check(sessions.open("secret-op", now=1000.0), now=1030.0)
    assert other is not None and other.csrf != login.csrf  # one CSRF token per session
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600


def test_failed_logins_are_limited_per_address() -> None:
    throttle = LoginThrottle(limit=3, window_s=60)
    for moment in (0.0, 1.0, 2.0):
        assert not throttle.blocked("10.0.0.9", now=moment)
        throttle.failed("10.0.0.9", now=moment)
    assert throttle.blocked("10.0.0.9", now=3.0) and not throttle.blocked("127.0.0.1", now=3.0)
    assert not throttle.blocked("10.0.0.9", now=61.5)
