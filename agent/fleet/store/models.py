"""The coordinator's tables as typed SQLAlchemy 2 models (docs/coordinator.md, "Store and ingest").

`Board` (one per device id: presence, last seen, hardware, runtimes), `StoredResult` (one per result:
device id + command id, the raw payload kept), `Measurement` (one per report a bench/eval/profile result
carries, its measures as indexed columns), `LatestMeasurement` (the newest per configuration),
`TelemetrySample`, `RejectedMessage`, `Alert`, `FleetJob` and `FleetJobBoard`. Every time is a
timezone-aware UTC datetime on both databases (`UtcDateTime`). The migrations in `migrations/versions`
create exactly this schema; tests/fleet/store/test_migrations.py holds the two together.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, List, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite keeps none: it is stored as UTC, read as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        """Refuse naive datetimes; store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} (the store keeps UTC times with their zone)")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        """Give every datetime back in UTC, zone attached."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """The coordinator's metadata."""


class Board(Base):
    """One device: its retained status, when it was last heard from, and the hardware and runtimes its
    latest `info` result (or report's device section) described."""

    __tablename__ = "boards"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[Optional[str]] = mapped_column(String(16))  # online / offline; None before any status
    state_since: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    agent_version: Mapped[Optional[str]] = mapped_column(Text)
    groups: Mapped[List[str]] = mapped_column(JSON, default=list)
    platform: Mapped[Optional[str]] = mapped_column(Text)  # the status's platform summary
    hardware_at: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)  # ts of the message describing it
    kind: Mapped[Optional[str]] = mapped_column(String(32))
    board_model: Mapped[Optional[str]] = mapped_column(Text, index=True)
    jetpack: Mapped[Optional[str]] = mapped_column(Text)
    l4t: Mapped[Optional[str]] = mapped_column(Text)
    soc: Mapped[Optional[str]] = mapped_column(Text)
    cpu_model: Mapped[Optional[str]] = mapped_column(Text)
    cpu_arch: Mapped[Optional[str]] = mapped_column(Text)
    cpu_cores: Mapped[Optional[int]] = mapped_column(Integer)
    memory_total_mib: Mapped[Optional[int]] = mapped_column(Integer)
    os: Mapped[Optional[str]] = mapped_column(Text)
    kernel: Mapped[Optional[str]] = mapped_column(Text)
    cuda: Mapped[Optional[str]] = mapped_column(Text)
    tensorrt: Mapped[Optional[str]] = mapped_column(Text)
    fingerprint: Mapped[Optional[str]] = mapped_column(String(16))

    runtimes: Mapped[List[BoardRuntime]] = relationship(
        back_populates="board", cascade="all, delete-orphan", order_by="BoardRuntime.name")


class BoardRuntime(Base):
    """A runtime of a board, as its latest `info` result listed it: version, or why it cannot run."""

    __tablename__ = "board_runtimes"

    device_id: Mapped[str] = mapped_column(ForeignKey("boards.device_id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    available: Mapped[bool]
    version: Mapped[Optional[str]] = mapped_column(Text)
    reason: Mapped[Optional[str]] = mapped_column(Text)

    board: Mapped[Board] = relationship(back_populates="runtimes")


class StoredResult(Base):
    """One job's final result from one board, stored once: (device id, command id) is unique, so a
    result the board's outbox sends again is absorbed. `payload` is the message as it arrived."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("device_id", "command_id", name="uq_results_device_command"),
                      Index("ix_results_cmd_ts", "cmd", "ts"))

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("boards.device_id", ondelete="CASCADE"), index=True)
    command_id: Mapped[str] = mapped_column(String(128))
    cmd: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    code: Mapped[Optional[str]] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)  # when the board made it
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[str] = mapped_column(Text)

    measurements: Mapped[List[Measurement]] = relationship(
        back_populates="result", cascade="all, delete-orphan", order_by="Measurement.position")

    def document(self) -> Any:
        """The result message as JSON."""
        return json.loads(self.payload)


class Measurement(Base):
    """One report of a bench/eval/profile result: the configuration it ran and its measures, pulled out
    of the payload so boards can be compared (docs/coordinator.md)."""

    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_configuration", "model_sha256", "board_model", "backend",
                            "precision", "threads", "runtime_version", "batch", "ts"),)  # a baseline's range

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]  # the report's index in the result
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)  # the result's
    kind: Mapped[Optional[str]] = mapped_column(String(16))  # bench / eval / profile
    status: Mapped[Optional[str]] = mapped_column(String(16))  # ok / failed
    board_model: Mapped[Optional[str]] = mapped_column(Text)
    model_name: Mapped[Optional[str]] = mapped_column(Text)
    model_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    model_format: Mapped[Optional[str]] = mapped_column(String(16))
    backend: Mapped[Optional[str]] = mapped_column(String(32))
    runtime_version: Mapped[Optional[str]] = mapped_column(Text)
    precision: Mapped[Optional[str]] = mapped_column(String(16))
    threads: Mapped[Optional[int]] = mapped_column(Integer)
    batch: Mapped[Optional[int]] = mapped_column(Integer)
    p50_ms: Mapped[Optional[float]] = mapped_column(Float)
    p99_ms: Mapped[Optional[float]] = mapped_column(Float)
    throughput_per_s: Mapped[Optional[float]] = mapped_column(Float)
    peak_rss_mb: Mapped[Optional[float]] = mapped_column(Float)
    top1: Mapped[Optional[float]] = mapped_column(Float)
    top1_agreement: Mapped[Optional[float]] = mapped_column(Float)  # fidelity against the FP32 reference
    stability: Mapped[Optional[str]] = mapped_column(String(16))  # stable / unstable / unknown

    result: Mapped[StoredResult] = relationship(back_populates="measurements")


class LatestMeasurement(Base):
    """Which measurement is the latest (by the board's `ts`, then id) of one configuration of one model file on
    one board: kept by ingest as results arrive (agent/fleet/store/latest.py), so the cross-board comparison
    reads one row per configuration instead of ranking every measurement ever stored."""

    __tablename__ = "latest_measurements"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # the configuration's digest
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    measurement_id: Mapped[int] = mapped_column(ForeignKey("measurements.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)


class TelemetrySample(Base):
    """One telemetry message of a board, kept within the configured retention."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_device_received", "device_id", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("boards.device_id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    job: Mapped[Optional[str]] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)

    def document(self) -> Any:
        """The telemetry message as JSON."""
        return json.loads(self.payload)


class RejectedMessage(Base):
    """A message refused at ingest: where it came from, why (one line), and its size; not its bytes."""

    __tablename__ = "rejected"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    size: Mapped[int] = mapped_column(Integer)


class Alert(Base):
    """A regression found in a new measurement against its configuration's baseline (`kind` "regression"),
    or a new baseline started because the runtime version or the model changed (`kind` "expected_change":
    a note, never an open alert). One row per measurement and measure (docs/coordinator.md, "Regressions")."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("measurement_id", "measure", name="uq_alerts_measurement_measure"),
                      Index("ix_alerts_state_created", "state", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # regression / expected_change
    state: Mapped[str] = mapped_column(String(16))  # open / acknowledged / resolved / noted
    measure: Mapped[str] = mapped_column(String(32))  # p50_ms / p99_ms / top1 / top1_agreement / configuration
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    measurement_id: Mapped[int] = mapped_column(ForeignKey("measurements.id", ondelete="CASCADE"))
    board_model: Mapped[Optional[str]] = mapped_column(Text)
    model_name: Mapped[Optional[str]] = mapped_column(Text)
    model_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    backend: Mapped[Optional[str]] = mapped_column(String(32))
    precision: Mapped[Optional[str]] = mapped_column(String(16))
    threads: Mapped[Optional[int]] = mapped_column(Integer)
    runtime_version: Mapped[Optional[str]] = mapped_column(Text)
    value: Mapped[Optional[float]] = mapped_column(Float)  # the new measurement's
    baseline: Mapped[Optional[float]] = mapped_column(Float)  # the baseline's median
    baseline_count: Mapped[Optional[int]] = mapped_column(Integer)
    limit: Mapped[Optional[float]] = mapped_column(Float)  # the value past which it is a regression
    message: Mapped[str] = mapped_column(Text)  # one line: what changed, by how much


class FleetJob(Base):
    """One command sent to a device, a group or every board: its id is the command id the boards see."""

    __tablename__ = "fleet_jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    target: Mapped[str] = mapped_column(String(200))  # a device id, group:<name> or all
    cmd: Mapped[str] = mapped_column(String(64))
    args: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created_by: Mapped[Optional[str]] = mapped_column(String(64))  # the API token's name
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)  # boards not final by then time out
    offline: Mapped[str] = mapped_column(String(16))  # wait (offline boards get it when back) / fail

    boards: Mapped[List[FleetJobBoard]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="FleetJobBoard.device_id")


class FleetJobBoard(Base):
    """One board's state in a fleet job: sent, accepted, running (with progress), done, failed, rejected,
    timed_out or offline; `result_id` links the result that ended it."""

    __tablename__ = "fleet_job_boards"

    job_id: Mapped[str] = mapped_column(ForeignKey("fleet_jobs.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[Optional[float]] = mapped_column(Float)  # 0..1 while running
    detail: Mapped[Optional[str]] = mapped_column(Text)  # the board's one-line message (a rejection, a failure)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    result_id: Mapped[Optional[int]] = mapped_column(ForeignKey("results.id", ondelete="SET NULL"))

    job: Mapped[FleetJob] = relationship(back_populates="boards")
