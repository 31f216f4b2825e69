"""Regression detection, as continuous-benchmarking tools do it (docs/coordinator.md, "Regressions").

A configuration is (board model, model sha256, backend, precision, threads, runtime version, batch). Its
baseline is the last `baseline_results` *stable* measurements before the new one (unstable ones never enter
it). A new measurement is judged once `min_baseline` of them exist, per measure: p50 and p99 must not rise
above the baseline median by more than `p50_pct`/`p99_pct` percent, Top-1 and the agreement with the FP32
reference must not fall by more than `top1_points`/`fidelity_points` points, and in both cases the move must
also exceed `mad_k` robust deviations (1.4826 × MAD) of the baseline, so a noisy baseline needs a larger
move. A measurement that is itself unstable is not judged on latency (its accuracy still is). A new runtime
version or a new model file for the same board model, model name, backend, precision, threads and batch is
an "expected change": a note that a new baseline starts, never an alert.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from agent.fleet.settings import RegressionSettings
from agent.fleet.store.database import Store
from agent.fleet.store.models import Alert, Measurement

MAD_SCALE = 1.4826  # MAD × this estimates the standard deviation of normal data


@dataclass(frozen=True)
class Rule:
    """How one measure is judged: its column, whether higher is worse, and its threshold setting."""

    measure: str
    higher_is_worse: bool
    setting: str  # the RegressionSettings field: a percent of the median, or points (1 point = 0.01)
    name: str


RULES = (Rule("p50_ms", True, "p50_pct", "p50"), Rule("p99_ms", True, "p99_pct", "p99"),
         Rule("top1", False, "top1_points", "Top-1"), Rule("top1_agreement", False, "fidelity_points", "fidelity"))
LATENCY = ("p50_ms", "p99_ms")


@dataclass(frozen=True)
class AlertRecord:
    """An alert or expected-change note as the API and the MQTT alert message carry it."""

    id: int
    kind: str
    state: str
    measure: str
    created_at: datetime
    device_id: str
    result_id: int
    measurement_id: int
    board_model: Optional[str]
    model_name: Optional[str]
    model_sha256: Optional[str]
    backend: Optional[str]
    precision: Optional[str]
    threads: Optional[int]
    runtime_version: Optional[str]
    value: Optional[float]
    baseline: Optional[float]
    baseline_count: Optional[int]
    limit: Optional[float]
    message: str

    @classmethod
    def of(cls, row: Alert) -> AlertRecord:
        """The record of a stored alert."""
        return cls(**{item.name: getattr(row, item.name) for item in fields(cls)})

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able values; `created_at` in ISO 8601 UTC with a Z."""
        document = {item.name: getattr(self, item.name) for item in fields(self)}
        document["created_at"] = self.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return document


def _same(column: Any, value: Any) -> Any:
    """Equality that holds for two NULLs too (an unknown board model or thread count is a value here)."""
    return column.is_(None) if value is None else column == value


def check_results(session: Session, new: Sequence[Measurement], settings: RegressionSettings,
                  now: datetime) -> List[AlertRecord]:
    """Judge each successful measurement of newly stored results (stored, so each has its id; in arrival order)
    against its baseline: the measurements stored before it, earlier ones of `new` included. Store and return the
    alerts and expected-change notes they raise."""
    judged = [measurement for measurement in new if measurement.status == "ok"]
    earlier = _Earlier(session, judged, settings.baseline_results)
    found: List[Alert] = []
    for measurement in judged:
        found += _judge(earlier, measurement, settings, now)
        earlier.add(measurement)
    session.add_all(found)
    session.flush()  # the alerts' ids
    return [AlertRecord.of(alert) for alert in found]


CONFIGURATION = ("board_model", "model_sha256", "backend", "precision", "threads", "runtime_version", "batch")
SETUP = ("board_model", "model_name", "backend", "precision", "threads", "batch")  # a configuration less its versions
EARLIER = ("id", "result_id", "ts", "stability", "runtime_version", "model_sha256", *(rule.measure for rule in RULES))
Earlier = Any  # a stored measurement's EARLIER columns (a row), or a Measurement of the batch: what judging reads
_QUERIES: Dict[Tuple[Tuple[str, ...], Tuple[bool, ...], bool], Any] = {}


def _key(measurement: Measurement, names: Sequence[str] = CONFIGURATION) -> Tuple[Any, ...]:
    return tuple(getattr(measurement, name) for name in names)


def _newest_query(names: Tuple[str, ...], unknown: Tuple[bool, ...], stable: bool) -> Any:
    """The EARLIER columns of the newest (by the board's ts, then id) successful measurements with the values of
    `names` up to a time (`up_to`), at most `count`; only stable ones if `stable`. Built once per pattern of
    unknown (NULL) values, whose comparison is `IS NULL`, with parameters for the rest; the configuration index
    (its columns, then ts) answers it without a sort."""
    query = _QUERIES.get((names, unknown, stable))
    if query is None:
        same = [getattr(Measurement, name).is_(None) if null else getattr(Measurement, name) == bindparam(name)
                for name, null in zip(names, unknown)]
        wanted = [Measurement.status == "ok", Measurement.ts <= bindparam("up_to")]
        if stable:
            wanted.append(Measurement.stability == "stable")
        query = _QUERIES[(names, unknown, stable)] = (
            select(*(getattr(Measurement, name) for name in EARLIER)).where(*same, *wanted)
            .order_by(Measurement.ts.desc(), Measurement.id.desc()).limit(bindparam("count")))
    return query


class _Earlier:
    """What each new measurement is judged against: the newest `limit` earlier stable measurements of its
    configuration, and the newest earlier one of its setup. The database is asked once per configuration of the
    batch, up to its newest new measurement, and again only for a new measurement older than an answer it would
    need (results arriving out of order); the batch's own measurements judged so far (`add`) come from memory.
    The batch's measurements are stored already, so each answer asks for as many more rows as the batch has of
    that configuration and leaves them out."""

    def __init__(self, session: Session, new: Sequence[Measurement], limit: int) -> None:
        self.session, self.limit = session, limit
        self.new_results = {measurement.result_id for measurement in new}
        self.in_batch: Dict[Tuple[Any, ...], int] = {}  # the batch's measurements per configuration and per setup
        up_to: Dict[Tuple[Any, ...], datetime] = {}
        for measurement in new:
            key = _key(measurement)
            up_to[key] = max(up_to.get(key, measurement.ts), measurement.ts)
            for counted in (key, _key(measurement, SETUP)):
                self.in_batch[counted] = self.in_batch.get(counted, 0) + 1
        self.stored = {key: self._query(CONFIGURATION, key, moment, limit, True) for key, moment in up_to.items()}
        self.batch: Dict[Tuple[Any, ...], List[Measurement]] = {}  # by configuration, and by setup
        self.batch_setup: Dict[Tuple[Any, ...], List[Measurement]] = {}

    def add(self, judged: Measurement) -> None:
        """A measurement of the batch is judged: those after it are judged against it too."""
        self.batch.setdefault(_key(judged), []).append(judged)
        self.batch_setup.setdefault(_key(judged, SETUP), []).append(judged)

    def _query(self, names: Tuple[str, ...], key: Tuple[Any, ...], up_to: datetime, count: int,
               stable: bool) -> List[Earlier]:
        """The newest `count` stored earlier measurements with these values, the batch's own left out."""
        query = _newest_query(names, tuple(value is None for value in key), stable)
        parameters = {name: value for name, value in zip(names, key) if value is not None}
        rows = self.session.execute(query, {**parameters, "up_to": up_to, "count": count + self.in_batch[key]})
        return [row for row in rows if row.result_id not in self.new_results][:count]

    def newest(self, new: Measurement) -> List[Earlier]:
        """The stable measurements `new` is judged against, newest first."""
        key = _key(new)
        stored = self.stored[key]
        if len(stored) == self.limit and any(row.ts > new.ts for row in stored):
            stored = self._query(CONFIGURATION, key, new.ts, self.limit, True)  # it left out rows this one needs
        else:
            stored = [row for row in stored if row.ts <= new.ts]
        mine = [row for row in self.batch.get(key, ()) if row.ts <= new.ts and row.result_id != new.result_id
                and row.stability == "stable"]
        return sorted(stored + mine, key=lambda row: (row.ts, row.id), reverse=True)[:self.limit]

    def last_setup(self, new: Measurement) -> Optional[Earlier]:
        """The newest earlier successful measurement of the same setup (any runtime version or model file)."""
        key = _key(new, SETUP)
        candidates = self._query(SETUP, key, new.ts, 1, False)
        candidates += [row for row in self.batch_setup.get(key, ())
                       if row.ts <= new.ts and row.result_id != new.result_id]
        return max(candidates, key=lambda row: (row.ts, row.id)) if candidates else None


def _judge(earlier: _Earlier, new: Measurement, settings: RegressionSettings, now: datetime) -> List[Alert]:
    baseline = earlier.newest(new)
    if not baseline:
        change = _expected_change(earlier.last_setup(new), new, now)
        return [change] if change else []
    if len(baseline) < settings.min_baseline:
        return []
    alerts = []
    for rule in RULES:
        if rule.measure in LATENCY and new.stability == "unstable":
            continue
        value = getattr(new, rule.measure)
        history = [getattr(row, rule.measure) for row in baseline if getattr(row, rule.measure) is not None]
        if value is None or len(history) < settings.min_baseline:
            continue
        limit = _limit(rule, history, getattr(settings, rule.setting), settings.mad_k)
        if (value > limit) if rule.higher_is_worse else (value < limit):
            alerts.append(_alert(new, "regression", "open", rule.measure, now, value, history, limit,
                                 _message(rule, value, statistics.median(history), len(history), limit)))
    return alerts


def _limit(rule: Rule, history: Sequence[float], threshold: float, mad_k: float) -> float:
    """The value past which a measure is a regression: the threshold and the baseline's noise, the larger."""
    median = statistics.median(history)
    spread = MAD_SCALE * statistics.median(abs(value - median) for value in history)
    if rule.higher_is_worse:
        return median + max(threshold / 100 * median, mad_k * spread)
    return median - max(threshold / 100, mad_k * spread)


def _message(rule: Rule, value: float, median: float, count: int, limit: float) -> str:
    """One line: the measure, how far it moved, against what."""
    if rule.higher_is_worse:
        return (f"{rule.name} {value:.4g} ms is {(value / median - 1) * 100:.0f}% above the baseline median "
                f"{median:.4g} ms of {count} stable results (limit {limit:.4g} ms)")
    return (f"{rule.name} {value * 100:.2f}% is {(median - value) * 100:.2f} points below the baseline median "
            f"{median * 100:.2f}% of {count} stable results (limit {limit * 100:.2f}%)")


def _expected_change(before: Optional[Earlier], new: Measurement, now: datetime) -> Optional[Alert]:
    """The note for a measurement of a configuration with no stable history whose runtime version or model file
    changed since `before`, the last measurement of its setup (none when nothing changed)."""
    if before is None:
        return None
    changes = []
    if before.runtime_version != new.runtime_version:
        changes.append(f"runtime {new.backend} {before.runtime_version} -> {new.runtime_version}")
    if before.model_sha256 != new.model_sha256:
        changes.append(f"model file {str(before.model_sha256)[:12]} -> {str(new.model_sha256)[:12]}")
    if not changes:
        return None
    return _alert(new, "expected_change", "noted", "configuration", now, None, [], None,
                  f"{' and '.join(changes)}: a new baseline starts (not a regression)")


def _alert(new: Measurement, kind: str, state: str, measure: str, now: datetime, value: Optional[float],
           history: Sequence[float], limit: Optional[float], message: str) -> Alert:
    return Alert(kind=kind, state=state, measure=measure, created_at=now, device_id=new.device_id,
                 result_id=new.result_id, measurement_id=new.id, board_model=new.board_model,
                 model_name=new.model_name, model_sha256=new.model_sha256, backend=new.backend,
                 precision=new.precision, threads=new.threads, runtime_version=new.runtime_version, value=value,
                 baseline=statistics.median(history) if history else None, baseline_count=len(history) or None,
                 limit=limit, message=message)


def list_alerts(store: Store, state: Optional[str] = None, device_id: Optional[str] = None,
                limit: int = 200) -> List[AlertRecord]:
    """Alerts and notes, newest first, optionally in one state or of one board."""
    query = select(Alert)
    if state is not None:
        query = query.where(Alert.state == state)
    if device_id is not None:
        query = query.where(Alert.device_id == device_id)
    with store.session() as session:
        return [AlertRecord.of(row) for row in
                session.scalars(query.order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit))]


# What an operator may do to an alert: the states it can move to, and from which. A note stays noted.
ALERT_MOVES = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}


def move_alert(store: Store, alert_id: int, state: str) -> Optional[AlertRecord]:
    """Acknowledge or resolve an alert (`ALERT_MOVES`; from any other state it stays as it is); None when
    there is no such alert."""
    with store.session() as session:
        row = session.get(Alert, alert_id)
        if row is None:
            return None
        if row.state in ALERT_MOVES[state]:
            row.state = state
        return AlertRecord.of(row)
