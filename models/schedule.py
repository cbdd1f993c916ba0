"""Schedules (interval, crontab with a time zone, clocked) and the beat processes' heartbeats."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Double, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import db
from models.job import TZ

KINDS = ("interval", "crontab", "clocked")
OVERLAP_POLICIES = ("allow", "skip")
MISFIRE_POLICIES = ("run_once", "skip")
SOURCES = ("code", "user")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Schedule(db.Model):
    """A periodic (or one-off) fire of a task; beat fires its slots into job_runs."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint(_one_of("kind", KINDS), name="kind"),
        CheckConstraint(_one_of("overlap", OVERLAP_POLICIES), name="overlap"),
        CheckConstraint(_one_of("misfire", MISFIRE_POLICIES), name="misfire"),
        CheckConstraint(_one_of("source", SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    every_s: Mapped[float | None] = mapped_column(Double)
    cron: Mapped[str | None] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    clocked_at: Mapped[datetime | None] = mapped_column(TZ)
    args: Mapped[Any] = mapped_column(JSONB, server_default="[]")
    kwargs: Mapped[Any] = mapped_column(JSONB, server_default="{}")
    queue: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    start_at: Mapped[datetime | None] = mapped_column(TZ)
    end_at: Mapped[datetime | None] = mapped_column(TZ)
    #: While the previous run of this schedule is not final: fire anyway, or record a skip.
    overlap: Mapped[str] = mapped_column(String(8), server_default="allow")
    #: After downtime: one catch-up run (run_once), or none (skip); both record what was missed.
    misfire: Mapped[str] = mapped_column(String(8), server_default="run_once")
    #: How late a fire may be and still count as on time.
    misfire_grace_s: Mapped[float] = mapped_column(Double, server_default="60")
    last_run_at: Mapped[datetime | None] = mapped_column(TZ)
    total_run_count: Mapped[int] = mapped_column(Integer, server_default="0")
    source: Mapped[str] = mapped_column(String(8), server_default="user")
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    #: The last slot beat has handled (fired or recorded as skipped): its cursor.
    last_slot_at: Mapped[datetime | None] = mapped_column(TZ)
    #: The next slot after the cursor; NULL means "plan afresh from now" (new, edited, enabled).
    next_fire_at: Mapped[datetime | None] = mapped_column(TZ, index=True)

    def __repr__(self) -> str:
        return f"<Schedule {self.name} {self.kind}>"


class BeatHeartbeat(db.Model):
    """One row per beat process: who leads, who stands by, and when each last ticked."""

    __tablename__ = "beat_heartbeats"

    node: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(8))
    started_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_tick_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
