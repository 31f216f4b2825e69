"""agent/fleet/regressions.py through ingest, on both databases, with copies of real bench reports whose
latency, accuracy, stability, runtime version or model file are changed: a slower result after a stable
baseline is an alert, noise is not, unstable results never enter the baseline, a runtime or model change
starts a new baseline with a note, a replay raises nothing twice."""

from __future__ import annotations

import copy
import itertools
from typing import Any, Dict, List

import pytest
from support.fleet import RealReports, at, bench_result

from agent.fleet import regressions
from agent.fleet.ingest import IngestSettings, Outcome, ingest
from agent.fleet.settings import RegressionSettings
from agent.fleet.store.database import Store

SETTINGS = IngestSettings(regressions=RegressionSettings(baseline_results=5, min_baseline=3, p50_pct=10.0,
                                                         p99_pct=25.0, top1_points=1.0, mad_k=3.0))
_ids = itertools.count()


def report(real: RealReports, p50: float, stability: str = "stable", top1: Any = None,
           version: Any = None, sha256: Any = None) -> Dict[str, Any]:
    """A copy of a real Orin report with these measures (p99 is twice the p50)."""
    item = copy.deepcopy(real.orin[0][0])
    item["latency"]["p50_ms"], item["latency"]["p99_ms"] = p50, 2 * p50
    item["latency"]["stability"]["verdict"] = stability
    if top1 is not None:
        item["accuracy"]["top1"] = top1
    if version is not None:
        item["backend"]["version"] = version
    if sha256 is not None:
        item["model"]["sha256"] = sha256
    return item


def send(store: Store, *items: Dict[str, Any]) -> List[Outcome]:
    """Each item as its own result of board-a, one second apart."""
    outcomes = []
    for item in items:
        number = next(_ids)
        outcomes.append(ingest(store, *bench_result("board-a", [item], f"cmd-{number}", seconds=number), SETTINGS,
                               received_at=at(number)))
    return outcomes


def baseline(store: Store, real: RealReports, **kwargs: Any) -> None:
    outcomes = send(store, *(report(real, p50, **kwargs) for p50 in (10.0, 10.2, 9.9)))
    assert all(outcome.alerts == () for outcome in outcomes)


def test_a_slower_result_is_an_open_alert_and_noise_is_not(store: Store, real: RealReports) -> None:
    baseline(store, real)
    (within,) = send(store, report(real, 10.6))
    assert within.alerts == ()
    (slower,) = send(store, report(real, 13.0))
    assert {alert.measure for alert in slower.alerts} == {"p50_ms", "p99_ms"}
    p50 = next(alert for alert in slower.alerts if alert.measure == "p50_ms")
    assert (p50.kind, p50.state, p50.value, p50.baseline, p50.baseline_count) == ("regression", "open", 13.0,
                                                                                  10.1, 4)
    assert p50.limit == pytest.approx(11.11) and "above the baseline median" in p50.message
    assert [alert.id for alert in regressions.list_alerts(store, state="open")] == \
        sorted((alert.id for alert in slower.alerts), reverse=True)


def test_unstable_results_never_enter_the_baseline_nor_are_judged_on_latency(store: Store,
                                                                             real: RealReports) -> None:
    send(store, *(report(real, p50, stability="unstable") for p50 in (1.0, 1.0, 1.0)))
    (judged,) = send(store, report(real, 10.0))
    assert judged.alerts == ()  # three unstable results are no baseline
    baseline(store, real)
    (noisy,) = send(store, report(real, 50.0, stability="unstable"))
    assert noisy.alerts == ()


def test_a_lower_top1_is_an_alert(store: Store, real: RealReports) -> None:
    baseline(store, real, top1=0.95)
    (worse,) = send(store, report(real, 10.0, top1=0.90))
    assert [(alert.measure, alert.value) for alert in worse.alerts] == [("top1", 0.90)]
    assert "points below" in worse.alerts[0].message


@pytest.mark.parametrize("change", [{"version": "9.9.9"}, {"sha256": "f" * 64}])
def test_a_new_runtime_or_model_file_starts_a_new_baseline(store: Store, real: RealReports,
                                                           change: Dict[str, str]) -> None:
    baseline(store, real)
    (first,) = send(store, report(real, 40.0, **change))
    assert [(alert.kind, alert.state, alert.measure) for alert in first.alerts] == [
        ("expected_change", "noted", "configuration")]
    assert "a new baseline starts" in first.alerts[0].message
    later = send(store, *(report(real, 40.0 + step, **change) for step in (0.1, 0.2, 0.3)))
    assert all(outcome.alerts == () for outcome in later)
    (slower,) = send(store, report(real, 60.0, **change))
    assert {alert.measure for alert in slower.alerts} == {"p50_ms", "p99_ms"}


def test_a_replay_raises_nothing_twice_and_an_alert_is_acknowledged_then_resolved(store: Store,
                                                                                 real: RealReports) -> None:
    baseline(store, real)
    topic, payload = bench_result("board-a", [report(real, 20.0)], "cmd-replayed", seconds=100)
    first = ingest(store, topic, payload, SETTINGS, received_at=at(100))
    again = ingest(store, topic, payload, SETTINGS, received_at=at(101))
    assert len(first.alerts) == 2 and (again.outcome, again.alerts) == ("duplicate", ())
    acknowledged = regressions.move_alert(store, first.alerts[0].id, "acknowledged")
    assert acknowledged is not None and acknowledged.state == "acknowledged"
    assert len(regressions.list_alerts(store, state="open")) == 1
    assert regressions.move_alert(store, 10 ** 6, "acknowledged") is None
    resolved = regressions.move_alert(store, first.alerts[0].id, "resolved")
    assert resolved is not None and resolved.state == "resolved"
    assert regressions.move_alert(store, first.alerts[0].id, "acknowledged").state == "resolved"  # type: ignore[union-attr]
    assert [alert.id for alert in regressions.list_alerts(store, state="resolved")] == [first.alerts[0].id]
