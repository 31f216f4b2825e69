"""The coordinator's tables as typed SQLAlchemy 2 models (docs/coordinator.md, "Store and ingest").

`Board` (one per device id: presence, last seen, hardware, runtimes), `StoredResult` (one per result:
device id + command id, the raw payload kept), `Measurement` (one per report a bench/eval/profile result
carries, its measures as indexed columns), `TelemetrySample` and `RejectedMessage`. Every time is a
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
    __table_args__ = (UniqueConstraint("device_id", "command_id", name="uq_results_device_command"),)

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
                            "precision", "threads", "runtime_version"),)

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
