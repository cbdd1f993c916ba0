"""What tests make: runs (make_run, the one run factory; report, what a worker reports about a
run) and schedule timings (utc, cron, every)."""
from __future__ import annotations

import json
import uuid as uuidlib
from datetime import datetime, timedelta, timezone
from typing import Any

from celery.utils import uuid
from sqlalchemy import text

from models import db, utcnow
from models.states import STATE_TIMESTAMP, RunState
from scheduler.beat.slots import Timing


def report(app, task_id: str, state: str | None = None, *, result: Any = None,
           error: BaseException | None = None, traceback: str | None = None,
           progress: tuple[int, int, str] | None = None) -> None:
    """Write what a worker reports about a run (an outcome, progress) through the worker's
    own writer (scheduler.recorder), for tests that make runs in a given state."""
    from scheduler.recorder import Recorder

    with app.app_context():
        rec = Recorder(db.engine, flush_s=0.01, max_pending=10, retry_max_s=1.0)
    try:
        now = utcnow()
        if progress is not None:
            rec.progress(task_id, *progress, now)
        if state is not None:
            message = f"{type(error).__name__}: {error}" if error is not None else None
            rec.finish(task_id, RunState(state), now, result=json.dumps(result),
                       error_type=type(error).__name__ if error is not None else None,
                       error_message=str(error) if error is not None else None,
                       traceback=traceback, message=message)
        assert rec.flush(10), "the report was not written"
    finally:
        rec.stop(1)


def make_run(app, task: str = "demo.noop", args=(), kwargs=None, *, state: str = "queued",
             task_id: str | None = None, trigger: str | None = None,
             schedule_id: int | None = None,
             scheduled_for: datetime | None = None, skip_reason: str | None = None,
             error: str = "boom", result=None, progress: tuple[int, int, str] | None = None,
             created: datetime | None = None, duration_s: float | None = None,
             conn=None, **columns) -> int:
    """A run in `state` (queued, scheduled, running, retrying, succeeded, failed, revoked,
    lost or skipped), never published, so it stays as made; returns its id. `trigger` is
    "web" unless given.

    By default the run is written as the product writes it: created through
    scheduler.records (as enqueue and beat do), started, given `progress` and ended through
    the worker's writer (`report`). A run with progress was started, whatever its state.

    With `created`, for queries over time (stats, rollups, pruning), the row is instead
    inserted as of that time in one statement (no events): created and last changed then,
    and, with `duration_s`, started then and in its state `duration_s` later; `columns` are
    other columns of job_runs. It is written on `conn` when given, else committed at once.
    """
    if created is not None:
        given = {"trigger": trigger, "schedule_id": schedule_id, "scheduled_for": scheduled_for,
                 "skip_reason": skip_reason}
        return _insert_run(app, task, state, created, duration_s, conn,
                           **{k: v for k, v in given.items() if v is not None}, **columns)
    assert not columns and duration_s is None and conn is None, "only with created="
    from scheduler import records

    task_id = task_id or uuid()
    args, kwargs = list(args), kwargs or {}
    started = state in ("running", "retrying", "succeeded", "failed", "lost") or (
        progress is not None)
    with app.app_context():
        eta = datetime.now(timezone.utc) + timedelta(hours=1) if state == "scheduled" else None
        run_id = records.create(task_id, task, args, kwargs, trigger=trigger or "web", eta=eta,
                                schedule_id=schedule_id, scheduled_for=scheduled_for,
                                skip_reason=(skip_reason or "overlap")
                                if state == "skipped" and not started else None)
        if started:
            records.start(task_id, task, args, kwargs, queue=None,
                          worker_host="test-host", worker_pid=4242)
    if progress is not None:
        report(app, task_id, progress=progress)
    if state == "succeeded":
        report(app, task_id, "succeeded", result=result)
    elif state in ("failed", "retrying"):
        report(app, task_id, state, error=RuntimeError(error),
               traceback=f"Traceback ...\nRuntimeError: {error}")
    elif state == "revoked":
        with app.app_context():
            if started:
                records.revoke(task_id, "made revoked", states=[RunState.RUNNING])
            else:
                records.revoke(task_id, "made revoked")
    elif state == "lost" or (state == "skipped" and started):
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(text(f"UPDATE job_runs SET state = :state, "
                              f"{STATE_TIMESTAMP[RunState(state)]} = now() WHERE id = :id"),
                         {"state": state, "id": run_id})
    return run_id


def _insert_run(app, task: str, state: str, created: datetime, duration_s: float | None,
                conn, **columns) -> int:
    values = {"task_id": str(uuidlib.uuid4()), "task_name": task, "state": state,
              "created_at": created, "updated_at": created, **columns}
    if duration_s is not None:
        values["started_at"] = created
        values[STATE_TIMESTAMP[RunState(state)]] = created + timedelta(seconds=duration_s)
    statement = text(f"INSERT INTO job_runs ({', '.join(values)}) "
                     f"VALUES ({', '.join(':' + k for k in values)}) RETURNING id")
    if conn is not None:
        return conn.execute(statement, values).scalar()
    with app.app_context(), db.engine.begin() as own:
        return own.execute(statement, values).scalar()


def utc(*args: int) -> datetime:
    """A moment in UTC: utc(2026, 6, 1, 12)."""
    return datetime(*args, tzinfo=timezone.utc)


def cron(expr: str, tz: str = "UTC", **kw: Any) -> Timing:
    """A crontab timing."""
    return Timing("crontab", cron=expr, tz=tz, **kw)


def every(seconds: float, **kw: Any) -> Timing:
    """An interval timing."""
    return Timing("interval", every_s=seconds, **kw)
