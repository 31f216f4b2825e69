"""The dashboard in a real headless Chromium, against a real coordinator process, three real agents (daemons with
their workers) and a real Mosquitto: log in, see three boards online, send a bench to one board from the form and
watch it reach done live (server-sent events), find the result in the model matrix with its chart drawn (the
chart's data checked against the table, the canvas not blank), inject a slower result and handle its alert, and log
in read-only to find no way to send (and a 403 from the endpoint). Chromium resolves nothing but 127.0.0.1 and
every page is checked to have fetched nothing from elsewhere. A failing test leaves a screenshot in
test-artifacts/."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from support.agent import QUICK_BENCH, AgentProcess, coordinator, no_stray_agents  # noqa: F401
from support.broker import NEEDS_MOSQUITTO, Broker
from support.browser import chromium, missing, outside_requests, painted_pixels
from support.coordinator import OPERATOR_TOKEN, READ_TOKEN, CoordinatorProcess, wait_for
from support.fleet import variant

pytestmark = [NEEDS_MOSQUITTO, pytest.mark.skipif(bool(missing()), reason=missing() or "-")]
ROOT = Path(__file__).resolve().parents[2]
AGENTS = (("board-a", ("lab",)), ("board-b", ("lab",)), ("board-c", ("shelf",)))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto on 127.0.0.1."""
    with Broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def service(tmp_path: Path, broker: Broker) -> Iterator[CoordinatorProcess]:
    """The coordinator on SQLite (the dashboard's queries run on PostgreSQL in tests/fleet/test_dashboard_views.py),
    with a baseline of three stable results."""
    started = CoordinatorProcess(tmp_path / "coordinator", broker, str(tmp_path / "coordinator.db"), settings={
        "regressions": {"baseline_results": 3, "min_baseline": 3}}).start()
    yield started
    started.kill()


@pytest.fixture
def agents(tmp_path: Path, broker: Broker, service: CoordinatorProcess) -> List[AgentProcess]:
    """Three agents online."""
    started = [AgentProcess(tmp_path / device, broker, device_id=device, groups=groups).start()
               for device, groups in AGENTS]
    wait_for("three boards online", lambda: all(board["state"] == "online"
                                                for board in service.api.get("/api/v1/boards")["boards"])
             and len(service.api.get("/api/v1/boards")["boards"]) == 3)
    return started


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A headless Chromium; a screenshot of its page in test-artifacts/ when the test fails."""
    with chromium() as driver:
        yield driver
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            folder = ROOT / "test-artifacts"
            folder.mkdir(exist_ok=True)
            path = folder / f"{request.node.name}.png"
            driver.save_screenshot(str(path))
            print(f"screenshot of the failing page: {path} ({driver.current_url})")


def log_in(driver: Any, base: str, token: str) -> None:
    """Log in through the form and land on the fleet overview."""
    driver.delete_all_cookies()
    driver.get(base + "/")
    assert "/login" in driver.current_url  # no session: the login page
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("id", "login").click()
    wait_for("the overview after login", lambda: driver.find_elements("id", "count-total"), timeout=15)


def text_of(driver: Any, selector: str) -> str:
    """The text of the first element matching a CSS selector, once the page shows one (a click's page may
    still be loading)."""
    found = wait_for(f"an element {selector}", lambda: driver.find_elements("css selector", selector), timeout=15)
    return str(found[0].text)


def only_local(driver: Any) -> None:
    """The page loaded its scripts, and from nowhere but 127.0.0.1."""
    assert driver.execute_script("return typeof Chart") == "function", "the vendored Chart.js did not load"
    assert outside_requests(driver) == []


def test_an_operator_runs_the_fleet_from_the_dashboard(service: CoordinatorProcess, agents: List[AgentProcess],
                                                       broker: Broker, browser: Any) -> None:
    base = service.api.base
    log_in(browser, base, OPERATOR_TOKEN)
    assert text_of(browser, "#count-online") == "3" and text_of(browser, "#count-total") == "3"
    rows = browser.find_elements("css selector", "#boards tbody tr")
    assert sorted(row.get_attribute("data-device") for row in rows) == ["board-a", "board-b", "board-c"]
    only_local(browser)

    # A fleet-wide command asks first, and says how many boards it would reach.
    browser.get(base + "/jobs")
    browser.find_element("css selector", "#target option[value='all']").click()
    browser.find_element("id", "model").send_keys("models/digits")
    browser.find_element("id", "send").click()
    assert "to 3 boards" in text_of(browser, "#confirm-text")
    assert service.api.get("/api/v1/jobs")["jobs"] == []  # nothing sent without the confirmation

    # One board, from the form: the job page follows it live until done.
    browser.get(base + "/jobs")
    browser.find_element("css selector", "#target option[value='board-a']").click()
    for name, value in (("model", QUICK_BENCH["model"]), ("iterations", "20"), ("min_seconds", "0"),
                        ("eval_limit", "60")):
        browser.find_element("name", name).send_keys(value)
    browser.find_element("css selector", "select[name='backend'] option[value='tflite']").click()
    browser.find_element("css selector", "select[name='precision'] option[value='fp32']").click()
    browser.find_element("id", "send").click()
    wait_for("the job page", lambda: "/jobs/" in browser.current_url, timeout=15)
    live = browser.find_element("id", "job-live")
    assert live.get_attribute("data-finished") == "no"  # rendered before the board finished: the rest is live
    wait_for("the stream saying finished", lambda: live.get_attribute("data-finished") == "yes", timeout=180)
    assert text_of(browser, "tr[data-device='board-a'] .state") == "done"
    assert browser.execute_script("return document.querySelector(\"tr[data-device='board-a'] progress\").value") == 1
    job_id = urllib.parse.unquote(browser.current_url.rsplit("/", 1)[1])
    stored = service.api.get(f"/api/v1/results/board-a/{job_id}")

    # The result in the model matrix, and the latency chart drawn from the same figures.
    browser.get(base + "/models")
    browser.find_element("css selector", "#models tbody a").click()
    text_of(browser, "#matrix")
    row = browser.find_element("css selector", "#matrix tr[data-device='board-a'][data-configuration='tflite/fp32']")
    p50 = stored["measurements"][0]["p50_ms"]
    charted = browser.execute_script("const c = window.edgeCharts['chart-latency']; "
                                     "return {labels: c.data.labels, p50: c.data.datasets[1].data};")
    assert charted["labels"] == ["board-a tflite/fp32 x" + row.find_elements("css selector", "td")[6].text]
    assert charted["p50"][0] == pytest.approx(p50, rel=1e-9)
    assert painted_pixels(browser, "chart-latency") > 1000
    only_local(browser)

    # A slower result (after a stable baseline) is an alert with its baseline; acknowledge, then resolve it.
    with coordinator(broker) as fleet:
        for factor in (1.0, 1.02, 0.98, 3.0):
            fleet.client.publish("edge/board-a/results", json.dumps(variant(stored["payload"], factor)),
                                 qos=1).wait_for_publish(10)
    wait_for("an open alert", lambda: service.api.get("/api/v1/alerts?state=open")["alerts"], timeout=30)
    browser.get(base + "/alerts")
    alert = next(row for row in browser.find_elements("css selector", "#alerts tbody tr")
                 if "p50_ms" in row.text)
    assert float(alert.find_element("css selector", ".value").text) > float(alert.find_element(
        "css selector", ".baseline").text)
    alert_id = alert.get_attribute("data-alert")
    alert.find_element("css selector", "button.ack").click()

    def state() -> str:
        return {row["id"]: row["state"] for row in service.api.get("/api/v1/alerts")["alerts"]}[int(alert_id)]

    wait_for("the alert acknowledged", lambda: state() == "acknowledged", timeout=15)
    browser.get(base + "/alerts?state=acknowledged")
    browser.find_element("css selector", f"#alerts tr[data-alert='{alert_id}'] button.resolve").click()
    wait_for("the alert resolved", lambda: state() == "resolved", timeout=15)
    browser.get(base + "/alerts?state=resolved")
    assert text_of(browser, f"#alerts tr[data-alert='{alert_id}'] .badge.resolved") == "resolved"

    # The board page: its result in the history.
    browser.get(base + "/boards/board-a")
    assert browser.find_elements("css selector", f"a[href='/results/board-a/{job_id}']")
    only_local(browser)


def test_a_read_only_login_has_no_way_to_send(service: CoordinatorProcess, browser: Any) -> None:
    base = service.api.base
    log_in(browser, base, READ_TOKEN)
    assert "read" in text_of(browser, "#who")
    browser.get(base + "/jobs")
    assert browser.find_elements("id", "send-form") == [] and browser.find_elements("id", "send") == []
    # Posting anyway, with the session's own CSRF token: 403 from the form endpoint and from the API.
    statuses = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector("input[name=csrf]").value;
        const form = new URLSearchParams({csrf, target: "all", cmd: "ping", confirmed: "yes"});
        Promise.all([
          fetch("/jobs", {method: "POST", body: form}).then((r) => r.status),
          fetch("/api/v1/jobs", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                                 body: JSON.stringify({target: "all", cmd: "ping"})}).then((r) => r.status),
          fetch("/api/v1/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify({target: "all", cmd: "ping"})}).then((r) => r.status),
        ]).then(done);""")
    assert statuses == [403, 403, 403]
    # The login form is CSRF-checked too: a login posted without the form's own token is refused.
    browser.get(base + "/login")
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("/login", {method: "POST", body: new URLSearchParams({token: arguments[0]}), redirect: "manual"})
          .then((r) => done(r.status));""", READ_TOKEN)
    assert status == 403
    # A forged session cookie is no session: back to the login.
    browser.delete_all_cookies()
    browser.get(base + "/login")
    browser.add_cookie({"name": "edge_session", "value": "tests-operator:9999999999:nonce:" + "0" * 64})
    browser.get(base + "/jobs")
    assert "/login" in browser.current_url
