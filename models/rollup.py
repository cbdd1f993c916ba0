"""Daily rollups of job runs: what the dashboard's longer charts read, kept after pruning."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import db
from models.job import TZ


class JobRunDaily(db.Model):
    """The runs created on one UTC day, per task and (then current) state.

    Written by scheduler.retention for complete days only, and before any run of the day is
    pruned. Until `sealed` a day is recomputed from job_runs (states still change); once its
    runs may have been pruned it is sealed and never written again.
    """

    __tablename__ = "job_run_daily"

    #: The UTC day the runs were created on.
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer)
    #: Runs with a duration (succeeded or failed after a start): the population of the
    #: percentiles; with `duration_sum_ms`, means merge across days and tasks.
    timed: Mapped[int] = mapped_column(Integer, server_default="0")
    duration_sum_ms: Mapped[float] = mapped_column(Float, server_default="0")
    #: Percentiles (linear interpolation, PostgreSQL percentile_cont) of the durations, from
    #: the start of the last attempt to the end; NULL when no run of the row has one.
    p50_ms: Mapped[float | None] = mapped_column(Float)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    #: Runs of this day may have been pruned: the row is final.
    sealed: Mapped[bool] = mapped_column(Boolean, server_default="false")
    computed_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())

    def __repr__(self) -> str:
        return f"<JobRunDaily {self.day} {self.task_name} {self.state} {self.runs}>"
