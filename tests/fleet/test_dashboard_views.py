"""The dashboard's queries (agent/fleet/dashboard/views.py) and every page served by a real uvicorn, on a real
SQLite file and a real PostgreSQL, fed real messages through ingest (real bench reports of models/digits on this
machine and on a captured Orin Nano, a real profile and a real select report), and its sessions
(agent/fleet/sessions.py): forged, expired and revoked cookies, CSRF on every form and on the API, redirects,
hostile board data in the pages, and the login throttle."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from support.cli import run_cli
from support.coordinator import served_api
from support.fleet import RealReports, at, bench_result, status, telemetry, ts, variant, wire

from agent.fleet.api import make_app
from agent.fleet.dashboard import views
from agent.fleet.dashboard.pages import add_dashboard, sparkline
from agent.fleet.ingest import ingest
from agent.fleet.queries import compare_boards
from agent.fleet.sessions import COOKIE, LoginThrottle, Sessions, csrf_ok, session_key
from agent.fleet.settings import ApiSettings, ApiToken, hash_token
from agent.fleet.store.database import Store
from agent.mqtt.protocol import Result


@pytest.fixture(scope="session")
def profile_report(digits: Path) -> Dict[str, Any]:
    """A real `edge-agent profile` report of models/digits on ONNX Runtime."""
    done = run_cli("profile", str(digits), "--backend", "onnxruntime", "--precision", "fp32", "--iterations", "20",
                   "--json")
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)[0]


@pytest.fixture(scope="session")
def select_report(digits: Path) -> Dict[str, Any]:
    """A real `edge-agent select` report of models/digits (its why-table: every candidate with its verdict)."""
    done = run_cli("select", str(digits), "--json")
    assert done.code == 0, done.stderr
    return dict(json.loads(done.stdout))


def select_result(device: str, report: Dict[str, Any], command_id: str, seconds: float) -> Tuple[str, bytes]:
    """A done `select` result carrying a selection report."""
    return wire(Result(device, command_id, "select", "done", report, ts=ts(seconds)))


def readings(temperature: float, throttled: bool) -> Dict[str, Any]:
    return {"load": [0.5, 0.4, 0.3], "memory_mb": {"total": 8000.0, "available": 5000.0},
            "temperature_c": {"cpu-thermal": temperature}, "max_temperature_c": temperature,
            "cpu_mhz": {"mean": 1500.0, "max": 1800.0}, "throttled": throttled, "throttle_reasons": [],
            "power_w": {"VDD_IN": 5.5}}


@pytest.fixture
def fleet(store: Store, real: RealReports, profile_report: Dict[str, Any], select_report: Dict[str, Any]) -> Store:
    """Two boards online, one offline; telemetry on board-a; benches on a and b; a profile on a; on board-b a
    select of digits, then a later one of another model; on board-c a select whose candidates are malformed."""
    other_model = json.loads(json.dumps(select_report))
    other_model["selection"]["key"]["models"] = {"onnx/fp32": "f" * 64}
    other_model["selection"]["candidates"][0]["reason"] = "the other model's reason"
    malformed = json.loads(json.dumps(select_report))
    malformed["selection"]["candidates"] = [{"backend": "tflite", "p50_ms": "NaN", "top1": "high"}, "not a candidate"]
    messages = [status("board-a", "online", 0, ["lab"]), status("board-b", "online", 0, ["shelf"]),
                status("board-c", "offline", 0, ["lab"]),
                *[telemetry("board-a", readings(50.0 + step, step == 2), 10 + step) for step in range(3)],
                bench_result("board-a", real.host, "bench-a", 20), bench_result("board-b", real.orin[0], "bench-b", 21),
                bench_result("board-a", [profile_report], "profile-a", 22, cmd="profile"),
                select_result("board-b", select_report, "select-digits", 23),
                select_result("board-b", other_model, "select-other", 24),
                select_result("board-c", malformed, "select-malformed", 25)]
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
    decided = views.board_page(fleet, "board-b")
    assert decided is not None and [item.command_id for item in decided.decisions] == ["select-other", "select-digits"]


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
    # board-b's newest select is of another model: this model's page shows the select that chose for it
    expected = [("board-b", "select-digits"), ("board-c", "select-malformed")]
    assert [(item.device_id, item.command_id) for item in page.decisions] == expected
    assert [(item.device_id, item.command_id) for item in page.selected] == expected
    reasons = [candidate.reason for candidate in page.decisions[0].candidates]
    assert "the other model's reason" not in reasons and len(reasons) >= 2


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


class Browser:
    """A cookie-keeping HTTP client of the dashboard that does not follow redirects (they are checked)."""

    def __init__(self, base: str) -> None:
        self.base, self.cookies = base, {}  # type: Tuple[str, Dict[str, str]]

    def request(self, method: str, path: str, form: Optional[Dict[str, str]] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], str]:
        """(status, headers, body) of one request, the cookies it set kept."""
        data = None if form is None else urllib.parse.urlencode(form).encode()
        sent = dict(headers or {}, Cookie="; ".join(f"{key}={value}" for key, value in self.cookies.items()))
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                status, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, body = error.code, error.headers, error.read()
        for header in answer.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if value and "Max-Age=0" not in header:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return status, dict(answer.items()), body.decode("utf-8")

    def log_in(self, token: str, next_path: str = "/") -> Tuple[int, Dict[str, str], str]:
        """Through the form: GET the login page (its own CSRF token), then POST the token."""
        _, _, page = self.request("GET", "/login?next=" + urllib.parse.quote(next_path))
        form_token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return self.request("POST", "/login", {"token": token, "csrf": form_token, "next": next_path})

    def csrf(self) -> str:
        """The session's CSRF token, as every page's logout form carries it."""
        _, _, page = self.request("GET", "/")
        return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def site(fleet: Store, real: RealReports) -> Iterator[str]:
    """The API and the dashboard over the fleet (no broker: sending a job answers 503), with two slower
    results on board-a after a stable baseline, so there are open alerts."""
    payload = json.loads(bench_result("board-a", real.host, "baseline", 30)[1])
    for factor in (1.0, 1.02, 0.98, 3.0):
        document = variant(payload, factor)
        ingest(fleet, "edge/board-a/results", json.dumps(document).encode())
    tokens = (ApiToken("ops", "operator", hash_token("op-token")), ApiToken("viewer", "read", hash_token("rd-token")))
    sessions = Sessions(tokens, session_key(""), 3600)
    app = make_app(fleet, ApiSettings(tokens=tokens), sessions=sessions)
    add_dashboard(app, fleet, sessions)
    with served_api(app) as api:
        yield api.base


def test_every_page_renders_with_real_and_hostile_data(site: str, fleet: Store, real: RealReports) -> None:
    browser = Browser(site)
    status, headers, _ = browser.log_in("op-token", "/boards/board-a")
    assert (status, headers["location"]) == (303, "/boards/board-a")
    sha = real.orin[0][0]["model"]["sha256"]
    rows = compare_boards(fleet, sha)
    pages = {"/": "board-c", "/boards/board-a": "Temperature", "/boards/board-b": "select-digits",
             "/boards/board-c": "tflite/None", "/models": sha[:12],
             f"/models/{sha}": "select-digits", f"/compare?a={rows[0].measurement_id}&b={rows[-1].measurement_id}":
             "Speedup", "/results/board-a/profile-a": "chart-roofline-1", "/results/board-b/select-digits": "Chose",
             "/alerts?state=all": "p50_ms", "/jobs": "send-form"}
    for path, expected in pages.items():
        status, headers, page = browser.request("GET", path)
        assert status == 200 and expected in page, (path, status, page[:400])
        assert "default-src 'self'" in headers["content-security-policy"]
    assert "the other model&#39;s reason" not in browser.request("GET", f"/models/{sha}")[2]
    status, _, page = browser.request("GET", "/boards/nobody")
    assert status == 404 and "unknown board" in page


def test_board_data_cannot_break_out_of_a_page(site: str, fleet: Store) -> None:
    hostile = readings(60.0, False)
    hostile["temperature_c"] = {"<!--<script>": 61.0, "</script><script>alert(1)</script>": 62.0}
    ingest(fleet, *telemetry("board-a", hostile, 40))
    browser = Browser(site)
    browser.log_in("op-token")
    status, _, page = browser.request("GET", "/boards/board-a")
    assert status == 200 and "<script>alert(1)" not in page and "<!--<script>" not in page
    block = page.split('id="data-temperature">', 1)[1].split("</script>", 1)[0]
    labels = [series["label"] for series in json.loads(block)]
    assert "<!--<script>" in labels and "</script><script>alert(1)</script>" in labels  # intact as data


def test_forms_and_the_api_need_the_sessions_csrf_token(site: str) -> None:
    browser = Browser(site)
    browser.log_in("op-token")
    csrf = browser.csrf()
    for path, form in (("/jobs", {"target": "board-a", "cmd": "ping"}), ("/alerts/1/ack", {}), ("/logout", {})):
        assert browser.request("POST", path, form)[0] == 403, path
        assert browser.request("POST", path, dict(form, csrf="é" * 8))[0] == 403, path
    json_post = {"Content-Type": "application/json"}
    status, _, body = browser.request("POST", "/api/v1/jobs", None, json_post)
    assert status == 403 and json.loads(body)["error"]["code"] == "csrf"
    request = urllib.request.Request(site + "/api/v1/jobs", data=b'{"target": "all", "cmd": "ping"}', method="POST",
                                     headers=dict(json_post, Cookie=f"{COOKIE}={browser.cookies[COOKIE]}",
                                                  **{"X-CSRF-Token": csrf}))
    with pytest.raises(urllib.error.HTTPError) as answer:  # past the CSRF check: no broker link here
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 503
    # an alert acknowledged, then resolved; acknowledging a resolved one is a conflict
    assert browser.request("POST", "/alerts/1/ack", {"csrf": csrf, "back": "/alerts?state=all"})[1]["location"] \
        == "/alerts?state=all"
    assert browser.request("POST", "/alerts/1/resolve", {"csrf": csrf, "back": "//elsewhere.example/"})[1][
        "location"] == "/"
    status, _, page = browser.request("POST", "/alerts/1/ack", {"csrf": csrf})
    assert status == 409 and "resolved" in page
    # a fleet-wide command is shown back before it is sent
    status, _, page = browser.request("POST", "/jobs", {"csrf": csrf, "target": "all", "cmd": "ping"})
    assert status == 200 and "to <b>3</b> boards" in page


def test_logins_redirects_and_logout(site: str) -> None:
    browser = Browser(site)
    status, headers, _ = browser.request("GET", "/models")
    assert status == 303 and headers["location"] == "/login?next=/models"
    assert browser.request("GET", "/jobs/anything/stream")[0] == 401
    assert browser.log_in("not-a-token")[0] == 401
    for target, landing in (("//elsewhere.example/x", "/"), ("https://elsewhere.example/", "/"), ("/\\x", "/"),
                            ("/alerts?state=open", "/alerts?state=open")):
        browser.cookies.clear()
        assert browser.log_in("rd-token", target)[1]["location"] == landing, target
    session = browser.cookies[COOKIE]
    assert "send-form" not in browser.request("GET", "/jobs")[2]  # read-only: no form
    assert browser.request("POST", "/logout", {"csrf": browser.csrf()})[0] == 303
    browser.cookies[COOKIE] = session  # the cookie kept after the logout is no session any more
    assert browser.request("GET", "/")[0] == 303
