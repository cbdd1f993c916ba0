"""Job records: one JobRun per Celery task_id, one JobEvent per state transition."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime

from models.base import db
from models.states import FINAL_STATES, RunState

TZ = DateTime(timezone=True)
_STATE_LIST = ", ".join(f"'{s.value}'" for s in RunState)  # DDL: a CHECK takes no parameters

#: SQL: the seconds a run took, from the start of its last attempt to its end, for runs that
#: ran to an end (succeeded or failed); NULL for the others (lost_at is when the sweep
#: noticed, and a revoked or skipped run may never have started).
RUN_SECONDS_SQL = ("extract(epoch FROM CASE state WHEN 'succeeded' THEN succeeded_at "
                   "WHEN 'failed' THEN failed_at END - started_at)")


class JobRun(db.Model):
    """One run of a task, keyed by its Celery task_id; retries keep the row."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint(f"state IN ({_STATE_LIST})", name="state"),
        Index("ix_job_runs_task_name_id", "task_name", "id"),
        Index("ix_job_runs_state_id", "state", "id"),
        Index("ix_job_runs_schedule_id_id", "schedule_id", "id"),
        Index("ix_job_runs_trigger_id", "trigger", "id"),
        # The runs list filtered by task and state, paged by id (not two indexes ANDed).
        Index("ix_job_runs_task_name_state_id", "task_name", "state", "id"),
        # Time ranges: the runs list's created from/to filter, the dashboard's last day/week.
        Index("ix_job_runs_created_at", "created_at"),
        # The runs list's task id prefix search (LIKE 'abc%' needs pattern ops outside the C
        # collation; PostgreSQL docs "Operator Classes and Operator Families").
        Index("ix_job_runs_task_id_prefix", "task_id",
              postgresql_ops={"task_id": "varchar_pattern_ops"}),
        # The re-runs of a run, and ON DELETE SET NULL when pruning (few rows have a link).
        Index("ix_job_runs_rerun_of_id", "rerun_of_id",
              postgresql_where=text("rerun_of_id IS NOT NULL")),
        # One run per slot of a schedule: the guard against a double fire (NULLs are distinct).
        UniqueConstraint("schedule_id", "scheduled_for", name="uq_job_runs_schedule_slot"),
        # The dispatcher's query: scheduled runs by due time.
        Index("ix_job_runs_due", "eta", postgresql_where=text("state = 'scheduled'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(255), unique=True)
    task_name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    #: Who published it: web, api, cli, beat, manual, rerun, retry, mail, or external (plain
    #: Celery means).
    trigger: Mapped[str] = mapped_column(String(16), server_default="external")
    queue: Mapped[str | None] = mapped_column(String(255))
    args: Mapped[Any | None] = mapped_column(JSONB)
    kwargs: Mapped[Any | None] = mapped_column(JSONB)
    #: The call exactly as Celery's JSON encodes it ({"args": [...], "kwargs": {...}}), never
    #: capped: what a later publish of this run sends (args/kwargs are the capped display copy).
    call_json: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    #: The worker_processes row of the process that runs (or last ran) it: its liveness is the
    #: run's. No foreign key: process rows are pruned, and a run whose row is gone is matched by
    #: worker_host and worker_pid (as runs started before process rows existed).
    worker_process_id: Mapped[int | None] = mapped_column(BigInteger)
    #: When the run is (or was) due: its countdown or slot, or a retry's next attempt.
    eta: Mapped[datetime | None] = mapped_column(TZ)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error_type: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    progress_current: Mapped[int | None] = mapped_column(BigInteger)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    progress_message: Mapped[str | None] = mapped_column(Text)
    progress_at: Mapped[datetime | None] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    scheduled_at: Mapped[datetime | None] = mapped_column(TZ)
    queued_at: Mapped[datetime | None] = mapped_column(TZ)
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    retrying_at: Mapped[datetime | None] = mapped_column(TZ)
    succeeded_at: Mapped[datetime | None] = mapped_column(TZ)
    failed_at: Mapped[datetime | None] = mapped_column(TZ)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ)
    lost_at: Mapped[datetime | None] = mapped_column(TZ)
    skipped_at: Mapped[datetime | None] = mapped_column(TZ)
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL")
    )
    #: The slot of its schedule this run fires (NULL for runs not fired by beat).
    scheduled_for: Mapped[datetime | None] = mapped_column(TZ)
    #: Why a `skipped` run was not run (overlap, or slots missed during downtime).
    skip_reason: Mapped[str | None] = mapped_column(Text)
    #: The run this one re-runs or retries (trigger `rerun` / `retry`), from the admin or API.
    rerun_of_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("job_runs.id", ondelete="SET NULL")
    )

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="run", order_by="JobEvent.id", cascade="all, delete-orphan"
    )

    @property
    def is_final(self) -> bool:
        return RunState(self.state) in FINAL_STATES

    def __repr__(self) -> str:
        return f"<JobRun {self.id} {self.task_name} {self.state}>"


class JobEvent(db.Model):
    """A state transition of a run: the timeline across all attempts."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_runs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)

    run: Mapped[JobRun] = relationship(back_populates="events")
