"""What each dashboard page shows, asked of the store (docs/dashboard.md): the fleet overview (filtered, one page
of boards with their temperature sparkline and current job), a board (telemetry series, results, `select`
decisions), the models and one model across the fleet (the matrix, each board's latency percentiles, what each
board's `select` chose and why), two measurements side by side, and one result (with a profile's layers and
roofline). Each answer is a frozen dataclass; the pages only lay them out.

The queries are shaped for a large fleet (docs/dashboard.md, "Speed"): the overview reads the board columns it
filters on, then the runtimes, jobs and newest telemetry of the one page it shows; payloads are parsed only
for what a page draws.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from agent.fleet import queries
from agent.fleet.jobs import FINAL_STATES
from agent.fleet.reports import Measured, lookup, number, text
from agent.fleet.store.database import Store
from agent.fleet.store.models import (
    Board,
    BoardRuntime,
    FleetJob,
    FleetJobBoard,
    LatestMeasurement,
    Measurement,
    StoredResult,
    TelemetrySample,
)

SPARKLINE_SAMPLES = 30  # the newest telemetry samples a board's sparkline draws
TELEMETRY_SAMPLES = 720  # the newest samples a board page charts
RESULTS_SHOWN = 50  # a board's newest results on its page
PERCENTILES = ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")


@dataclass(frozen=True)
class BoardFilters:
    """The overview's filters; None (or empty) matches everything."""

    group: Optional[str] = None
    board_model: Optional[str] = None
    state: Optional[str] = None  # online / offline / unknown
    search: Optional[str] = None  # a part of the device id


@dataclass(frozen=True)
class CurrentJob:
    """The fleet job a board is busy with (or owed), and how far it is."""

    id: str
    cmd: str
    state: str
    progress: Optional[float]


@dataclass(frozen=True)
class BoardRow:
    """One board on the overview."""

    device_id: str
    state: str
    last_seen: datetime
    board_model: Optional[str]
    jetpack: Optional[str]
    runtimes: List[str]  # "onnxruntime 1.32.0", available ones only
    groups: List[str]
    temperature_c: Optional[float]  # the newest sample's hottest zone
    throttled: Optional[bool]
    temperatures: List[float]  # oldest first, for the sparkline
    job: Optional[CurrentJob]


@dataclass(frozen=True)
class Overview:
    """The fleet overview: counts over every board, the filter choices, and one page of matching boards."""

    counts: Dict[str, int]  # state -> boards, over the whole fleet
    total: int
    matched: int
    groups: List[str]
    board_models: List[str]
    rows: List[BoardRow]
    page: int
    pages: int
    filters: BoardFilters


def board_state(state: Optional[str]) -> str:
    """A board's presence as the pages show it (`unknown` before its first status)."""
    return state or "unknown"


def overview(store: Store, filters: BoardFilters, page: int = 1, per_page: int = 100) -> Overview:
    """Every board counted, the ones matching `filters` paged by device id, and the page's details."""
    columns = (Board.device_id, Board.state, Board.last_seen, Board.board_model, Board.jetpack, Board.groups)
    with store.session() as session:
        boards = session.execute(select(*columns).order_by(Board.device_id)).all()
        counts: Dict[str, int] = {}
        groups: Set[str] = set()
        models: Set[str] = set()
        matched = []
        for board in boards:
            state = board_state(board.state)
            counts[state] = counts.get(state, 0) + 1
            groups.update(board.groups or [])
            if board.board_model:
                models.add(board.board_model)
            if _matches(board, state, filters):
                matched.append(board)
        pages = max(1, math.ceil(len(matched) / per_page))
        page = min(max(page, 1), pages)
        shown = matched[(page - 1) * per_page:page * per_page]
        ids = [board.device_id for board in shown]
        runtimes = _runtimes(session, ids)
        jobs = _current_jobs(session, ids)
        readings = {device: _readings(session, device, SPARKLINE_SAMPLES) for device in ids}
    rows = []
    for board in shown:
        samples = readings[board.device_id]
        newest = samples[-1] if samples else {}
        rows.append(BoardRow(board.device_id, board_state(board.state), board.last_seen, board.board_model,
                             board.jetpack, runtimes.get(board.device_id, []), list(board.groups or []),
                             number(newest.get("max_temperature_c")), _flag(newest.get("throttled")),
                             [value for value in (number(sample.get("max_temperature_c")) for sample in samples)
                              if value is not None], jobs.get(board.device_id)))
    return Overview(counts, len(boards), len(matched), sorted(groups), sorted(models), rows, page, pages, filters)


def _matches(board: Any, state: str, filters: BoardFilters) -> bool:
    return ((not filters.group or filters.group in (board.groups or []))
            and (not filters.board_model or board.board_model == filters.board_model)
            and (not filters.state or state == filters.state)
            and (not filters.search or filters.search.lower() in board.device_id.lower()))


def _flag(value: Any) -> Optional[bool]:
    return value if isinstance(value, bool) else None


def _runtimes(session: Any, ids: Sequence[str]) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    query = (select(BoardRuntime.device_id, BoardRuntime.name, BoardRuntime.version)
             .where(BoardRuntime.device_id.in_(ids), BoardRuntime.available.is_(True)).order_by(BoardRuntime.name))
    for device_id, name, version in session.execute(query):
        found.setdefault(device_id, []).append(f"{name} {version or ''}".strip())
    return found


def _current_jobs(session: Any, ids: Sequence[str]) -> Dict[str, CurrentJob]:
    """Per board, its newest fleet job that is not final yet."""
    query = (select(FleetJobBoard.device_id, FleetJob.id, FleetJob.cmd, FleetJobBoard.state, FleetJobBoard.progress)
             .join(FleetJob, FleetJob.id == FleetJobBoard.job_id)
             .where(FleetJobBoard.device_id.in_(ids), FleetJobBoard.state.not_in(FINAL_STATES))
             .order_by(FleetJob.created_at))
    return {row.device_id: CurrentJob(row.id, row.cmd, row.state, row.progress) for row in session.execute(query)}


def _readings(session: Any, device_id: str, count: int) -> List[Dict[str, Any]]:
    """The `readings` of a board's newest `count` telemetry samples, oldest first, each with its `ts`."""
    query = (select(TelemetrySample.ts, TelemetrySample.payload).where(TelemetrySample.device_id == device_id)
             .order_by(TelemetrySample.received_at.desc(), TelemetrySample.id.desc()).limit(count))
    samples = []
    for ts, payload in session.execute(query):
        try:
            readings = json.loads(payload).get("readings")
        except (ValueError, AttributeError):
            continue
        if isinstance(readings, dict):
            samples.append(dict(readings, ts=ts))
    samples.reverse()
    return samples


@dataclass(frozen=True)
class Series:
    """One line of a time chart: a label and (epoch milliseconds, value) points."""

    label: str
    points: List[Tuple[int, float]]


@dataclass(frozen=True)
class MeasurementRow(Measured):
    """A measurement (its configuration and measures, as ingest pulled them from the report) with where it came
    from, as the result lists and the comparison show it."""

    id: int
    device_id: str
    command_id: str
    cmd: str
    ts: datetime


@dataclass(frozen=True)
class ResultRow:
    """One result in a board's history: the command and how it ended, with its measurements."""

    command_id: str
    cmd: str
    status: str
    code: Optional[str]
    ts: datetime
    measurements: List[MeasurementRow]


@dataclass(frozen=True)
class Candidate:
    """One row of a `select` why-table: a configuration, its verdict, its figures and the reason."""

    configuration: str  # "tflite/int8 x2 (tflite/int8)"
    status: Optional[str]  # chosen / lost / rejected / pending
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    top1: Optional[float]
    stability: Optional[str]
    reason: Optional[str]


@dataclass(frozen=True)
class Decision:
    """What one `select` chose on a board, and every candidate with its verdict and reason (the why-table)."""

    device_id: str
    command_id: str
    ts: datetime
    model: Optional[str]
    choice: Optional[str]  # "tflite/int8 x2 (tflite/int8)"
    candidates: List[Candidate]
    notes: List[str]


@dataclass(frozen=True)
class BoardPage:
    """A board: its presence and hardware, telemetry charts, results history and `select` decisions."""

    board: queries.BoardView
    temperatures: List[Series]
    clocks: List[Series]
    memory: List[Series]
    power: List[Series]
    results: List[ResultRow]
    decisions: List[Decision]
    job: Optional[CurrentJob]

    @property
    def measurements(self) -> List[MeasurementRow]:
        """Every measurement of the results shown, newest result first (the A/B choices)."""
        return [item for result in self.results for item in result.measurements]


def board_page(store: Store, device_id: str) -> Optional[BoardPage]:
    """Everything the board page shows, or None for an unknown board."""
    board = queries.get_board(store, device_id, telemetry=0)
    if board is None:
        return None
    with store.session() as session:
        samples = _readings(session, device_id, TELEMETRY_SAMPLES)
        results = _results(session, device_id)
        decisions = [_decision(row) for row in session.scalars(
            select(StoredResult).where(StoredResult.device_id == device_id, StoredResult.cmd == "select")
            .order_by(StoredResult.ts.desc(), StoredResult.id.desc()).limit(10))]
        job = _current_jobs(session, [device_id]).get(device_id)
    return BoardPage(board, _series(samples, "temperature_c", "max_temperature_c", "hottest"),
                     _series(samples, "cpu_mhz", None, None), _memory(samples), _series(samples, "power_w", None, None),
                     results, decisions, job)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _series(samples: Sequence[Dict[str, Any]], group: str, extra: Optional[str],
            extra_label: Optional[str]) -> List[Series]:
    """One series per key of the readings' `group` object (zones, sensors, mean/max), plus `extra` if given."""
    lines: Dict[str, List[Tuple[int, float]]] = {}
    for sample in samples:
        moment = _epoch_ms(sample["ts"])
        values = sample.get(group)
        if isinstance(values, dict):
            for key, value in values.items():
                found = number(value)
                if found is not None and isinstance(key, str):
                    lines.setdefault(key, []).append((moment, found))
        if extra is not None and extra_label is not None:
            found = number(sample.get(extra))
            if found is not None:
                lines.setdefault(extra_label, []).append((moment, found))
    return [Series(label, points) for label, points in sorted(lines.items())]


def _memory(samples: Sequence[Dict[str, Any]]) -> List[Series]:
    used = []
    for sample in samples:
        total = number(lookup(sample, "memory_mb", "total"))
        available = number(lookup(sample, "memory_mb", "available"))
        if total is not None and available is not None:
            used.append((_epoch_ms(sample["ts"]), round(total - available, 1)))
    return [Series("used MB", used)] if used else []


def _measurement_row(row: Measurement, result: StoredResult) -> MeasurementRow:
    measured = {item.name: getattr(row, item.name) for item in fields(Measured)}
    return MeasurementRow(**measured, id=row.id, device_id=row.device_id, command_id=result.command_id,
                          cmd=result.cmd, ts=row.ts)


def _results(session: Any, device_id: str) -> List[ResultRow]:
    query = (select(StoredResult).where(StoredResult.device_id == device_id)
             .order_by(StoredResult.ts.desc(), StoredResult.id.desc()).limit(RESULTS_SHOWN))
    rows = list(session.scalars(query))
    measured: Dict[int, List[MeasurementRow]] = {}
    by_id = {row.id: row for row in rows}
    for item in session.scalars(select(Measurement).where(Measurement.result_id.in_(list(by_id)))
                                .order_by(Measurement.position)):
        measured.setdefault(item.result_id, []).append(_measurement_row(item, by_id[item.result_id]))
    return [ResultRow(row.command_id, row.cmd, row.status, row.code, row.ts, measured.get(row.id, [])) for row in rows]


def _decision(row: StoredResult) -> Decision:
    """A stored `select` result as a decision; every field of the board's report read defensively."""
    report = lookup(row.document(), "report")
    selection = lookup(report, "selection")
    candidates = lookup(selection, "candidates")
    notes = lookup(selection, "notes")
    model = lookup(report, "model")
    return Decision(row.device_id, row.command_id, row.ts, text(model) or text(lookup(model, "name")),
                    _configuration(lookup(selection, "choice")),
                    [_candidate(item) for item in candidates if isinstance(item, dict)]
                    if isinstance(candidates, list) else [],
                    [note for note in notes if isinstance(note, str)] if isinstance(notes, list) else [])


def _candidate(item: Dict[str, Any]) -> Candidate:
    return Candidate(_configuration(item) or "?", text(item.get("status"), 16), number(item.get("p50_ms")),
                     number(item.get("p99_ms")), number(item.get("top1")), text(item.get("stability"), 16),
                     text(item.get("reason")))


def _configuration(candidate: Any) -> Optional[str]:
    """A candidate as one label: `backend/precision xTHREADS (bundle file)`."""
    if not isinstance(candidate, dict):
        return None
    label = f"{text(candidate.get('backend'), 32)}/{text(candidate.get('precision'), 16)}"
    threads = number(candidate.get("threads"))
    if threads is not None:
        label += f" x{threads:g}"
    model = text(candidate.get("model"), 256)
    return label + (f" ({model})" if model else "")


@dataclass(frozen=True)
class ModelSummary:
    """A model file the fleet has measured: on how many boards, in how many configurations, and when last."""

    sha256: str
    name: Optional[str]
    boards: int
    configurations: int
    latest: datetime


def models(store: Store) -> List[ModelSummary]:
    """Every measured model file, the most recently measured first (from the latest measurement of each
    configuration, so the cost follows the configurations, not every result ever stored)."""
    latest = LatestMeasurement
    query = (select(latest.model_sha256, func.max(Measurement.model_name), func.count(func.distinct(latest.device_id)),
                    func.count(), func.max(latest.ts))
             .join(Measurement, Measurement.id == latest.measurement_id)
             .group_by(latest.model_sha256).order_by(func.max(latest.ts).desc()))
    with store.session() as session:
        return [ModelSummary(sha, name, boards, count, newest)
                for sha, name, boards, count, newest in session.execute(query)]


@dataclass(frozen=True)
class Percentiles:
    """One matrix row's latency distribution, from its report: min, p50, p90, p99, max (ms)."""

    label: str  # "device backend/precision xthreads"
    measurement_id: int
    values: Dict[str, Optional[float]]


@dataclass(frozen=True)
class ModelPage:
    """One model across the fleet."""

    sha256: str
    name: Optional[str]
    rows: List[queries.BoardComparison]
    spread: List[queries.Spread]
    selected: List[queries.SelectedConfiguration]
    percentiles: List[Percentiles]
    decisions: List[Decision]


def model_page(store: Store, sha256: str, chart_rows: int = 200) -> Optional[ModelPage]:
    """The matrix of one model file, the latency percentiles of its first `chart_rows` rows, and each board's
    newest `select` of it with its why-table; None when no measurement of it is stored."""
    rows = queries.compare_boards(store, sha256)
    if not rows:
        return None
    charted = rows[:chart_rows]
    with store.session() as session:
        payloads = {item.id: (item.position, item.result.document()) for item in session.scalars(
            select(Measurement).where(Measurement.id.in_([row.measurement_id for row in charted]))
            .options(selectinload(Measurement.result)))}
        name = session.scalars(select(Measurement.model_name)
                               .where(Measurement.model_sha256 == sha256).limit(1)).first()
        selected = queries.selected_configurations(store, sha256)
        chosen = {(item.device_id, item.command_id) for item in selected}
        decisions = sorted((_decision(row) for row in session.scalars(
            select(StoredResult).where(StoredResult.command_id.in_([command for _, command in chosen])))
            if (row.device_id, row.command_id) in chosen), key=lambda decision: decision.device_id)
    percentiles = []
    for row in charted:
        position, document = payloads[row.measurement_id]
        latency = lookup(_report(document, position), "latency")
        percentiles.append(Percentiles(f"{row.device_id} {row.backend}/{row.precision} x{row.threads}",
                                       row.measurement_id,
                                       {key: number(lookup(latency, key)) for key in PERCENTILES}))
    return ModelPage(sha256, name, rows, queries.spread(rows), selected, percentiles, decisions)


def _report(document: Any, position: int) -> Any:
    reports = lookup(document, "report", "reports")
    return reports[position] if isinstance(reports, list) and 0 <= position < len(reports) else None


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the measurement and the latency statistics of its report."""

    row: MeasurementRow
    latency: Dict[str, Optional[float]]
    params: Optional[float]
    macs: Optional[float]


@dataclass(frozen=True)
class Delta:
    """One measure on both sides: the difference B - A and, for times, the speedup A / B."""

    measure: str
    a: Optional[float]
    b: Optional[float]
    delta: Optional[float]
    speedup: Optional[float]


@dataclass(frozen=True)
class Comparison:
    """Two measurements side by side (two boards, two configurations, or two model versions)."""

    a: Side
    b: Side
    deltas: List[Delta]


TIMES = ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")
HIGHER_BETTER = ("throughput_per_s", "top1", "top1_agreement")


def compare(store: Store, a_id: int, b_id: int) -> Optional[Comparison]:
    """Measurements `a_id` and `b_id` side by side with their deltas (speedup = A time / B time); None when either
    is unknown."""
    with store.session() as session:
        found = {item.id: item for item in session.scalars(select(Measurement).where(Measurement.id.in_([a_id, b_id])))}
        if a_id not in found or b_id not in found:
            return None
        a, b = (_side(found[key]) for key in (a_id, b_id))
    deltas = [_delta(f"latency {key}", a.latency.get(key), b.latency.get(key), True) for key in TIMES]
    for key in ("throughput_per_s", "peak_rss_mb", "top1", "top1_agreement"):
        deltas.append(_delta(key, getattr(a.row, key), getattr(b.row, key), False))
    deltas += [_delta("params", a.params, b.params, False), _delta("MACs", a.macs, b.macs, False)]
    return Comparison(a, b, deltas)


def _side(item: Measurement) -> Side:
    report = _report(item.result.document(), item.position)
    latency = lookup(report, "latency")
    totals = lookup(report, "profile", "totals")
    return Side(_measurement_row(item, item.result), {key: number(lookup(latency, key)) for key in TIMES},
                number(lookup(totals, "params")), number(lookup(totals, "macs")))


def _delta(measure: str, a: Optional[float], b: Optional[float], time: bool) -> Delta:
    both = a is not None and b is not None
    delta = b - a if both else None  # type: ignore[operator]
    speedup = a / b if time and both and b else None  # type: ignore[operator]
    return Delta(measure, a, b, delta, speedup)


@dataclass(frozen=True)
class Layer:
    """One row of a profile's per-layer table."""

    name: str
    op: str
    macs: Optional[float]
    flops: Optional[float]
    params: Optional[float]
    bytes: Optional[float]
    intensity: Optional[float]
    measured_ms: Optional[float]
    achieved_gflops: Optional[float]
    roof_fraction: Optional[float]
    bound: Optional[str]
    ceiling: Optional[str]


@dataclass(frozen=True)
class Roofline:
    """What the roofline chart draws: the compute roofs (GFLOP/s), the bandwidth roofs (GB/s), and the
    layers that ran long enough to place (intensity FLOP/byte, achieved GFLOP/s)."""

    compute: Dict[str, float]
    memory: Dict[str, float]
    points: List[Tuple[str, float, float]]


@dataclass(frozen=True)
class ProfileView:
    """One profile report of a result: its configuration, layers and roofline."""

    label: str
    layers: List[Layer]
    roofline: Optional[Roofline]


@dataclass(frozen=True)
class ResultPage:
    """One result: the stored row, its measurements, the profiles it holds, and the message as it arrived."""

    result: queries.ResultView
    measurements: List[MeasurementRow]
    profiles: List[ProfileView]
    decision: Optional[Decision]


def result_page(store: Store, device_id: str, command_id: str) -> Optional[ResultPage]:
    """Everything the result page shows, or None for an unknown result."""
    with store.session() as session:
        row = session.scalars(select(StoredResult).where(StoredResult.device_id == device_id,
                                                         StoredResult.command_id == command_id)
                              .options(selectinload(StoredResult.measurements))).first()
        if row is None:
            return None
        found = queries.result_view(row, with_payload=True)
        measured = [_measurement_row(item, row) for item in sorted(row.measurements, key=lambda item: item.position)]
        decision = _decision(row) if row.cmd == "select" else None
    reports = lookup(found.payload, "report", "reports")
    profiles = [_profile(report) for report in reports if isinstance(lookup(report, "profile"), dict)] \
        if isinstance(reports, list) else []
    return ResultPage(found, measured, profiles, decision)


def _profile(report: Dict[str, Any]) -> ProfileView:
    profile = report["profile"]
    layers = []
    for layer in profile.get("layers") or []:
        if not isinstance(layer, dict):
            continue
        moved = [number(layer.get(key)) for key in ("bytes_read", "bytes_written")]
        layers.append(Layer(str(layer.get("name")), str(layer.get("op")), number(layer.get("macs")),
                            number(layer.get("flops")), number(layer.get("params")),
                            None if None in moved else sum(moved),  # type: ignore[arg-type]
                            number(layer.get("intensity")), number(layer.get("measured_ms")),
                            number(layer.get("achieved_gflops")), number(layer.get("roof_fraction")),
                            text(layer.get("bound")), text(layer.get("ceiling"))))
    label = (f"{lookup(report, 'model', 'name')} {lookup(report, 'backend', 'name')}/"
             f"{lookup(report, 'model', 'precision')}")
    return ProfileView(label, layers, _roofline(profile.get("roofline"), layers))


def _roofline(roofline: Any, layers: Sequence[Layer]) -> Optional[Roofline]:
    if not isinstance(roofline, dict):
        return None
    compute = {str(key): value for key, value in (roofline.get("compute") or {}).items() if number(value)}
    peaks = lookup(roofline, "peaks", "memory")
    all_cores = roofline.get("ceiling") == "all cores"
    memory = {}
    for level in peaks if isinstance(peaks, list) else []:
        value = number(lookup(level, "gbs_all" if all_cores else "gbs_single"))
        if value and isinstance(lookup(level, "name"), str):
            memory[level["name"]] = value
    points = [(layer.name, layer.intensity, layer.achieved_gflops) for layer in layers
              if layer.intensity and layer.achieved_gflops]
    return Roofline(compute, memory, points)


@dataclass(frozen=True)
class JobSummary:
    """A fleet job on the jobs page: what, to whom, by whom, and how many boards are in each state."""

    id: str
    target: str
    cmd: str
    model: Optional[str]
    created_at: datetime
    created_by: Optional[str]
    counts: Dict[str, int]

    @property
    def finished(self) -> bool:
        """Whether every board of the job is in a final state."""
        return all(state in FINAL_STATES for state in self.counts)


def job_summaries(store: Store, limit: int = 100) -> List[JobSummary]:
    """The newest fleet jobs first, their boards counted by state in the database (a job may hold every board)."""
    with store.session() as session:
        found = session.execute(select(FleetJob.id, FleetJob.target, FleetJob.cmd, FleetJob.args, FleetJob.created_at,
                                       FleetJob.created_by)
                                .order_by(FleetJob.created_at.desc(), FleetJob.id).limit(limit)).all()
        counts: Dict[str, Dict[str, int]] = {}
        for job_id, state, count in session.execute(
                select(FleetJobBoard.job_id, FleetJobBoard.state, func.count())
                .where(FleetJobBoard.job_id.in_([row.id for row in found]))
                .group_by(FleetJobBoard.job_id, FleetJobBoard.state)):
            counts.setdefault(job_id, {})[state] = count
    return [JobSummary(row.id, row.target, row.cmd, text((row.args or {}).get("model")), row.created_at, row.created_by,
                       counts.get(row.id, {})) for row in found]


def targets(store: Store) -> Tuple[List[str], List[str]]:
    """What a job can be sent to: every board's device id, and every group a board is in."""
    with store.session() as session:
        rows = session.execute(select(Board.device_id, Board.groups).order_by(Board.device_id)).all()
    return [row.device_id for row in rows], sorted({group for row in rows for group in (row.groups or [])})
