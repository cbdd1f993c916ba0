"""Writes of job records by publishers, beat, the sweep and the admin actions: each state
transition updates job_runs and adds a job_events row.

Each transition is one statement (a CTE that changes the run and inserts its event), committed
on its own connection (or in the caller's `conn`), so it never joins or disturbs the caller's
ORM session. What a worker reports about its runs (running, outcome, progress) goes through its
process's buffered writer, scheduler.recorder, which writes a batch in one statement.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import Connection, text

from models import db, utcnow
from models.states import FINAL_STATES, SETTLED_STATES, STATE_TIMESTAMP, RunState, names
from scheduler.payload import encode_call



#: Transitions a worker writes about its own run.
_WORKER_REPORTS = (RunState.SUCCEEDED, RunState.FAILED, RunState.RETRYING)



def _execute(sql: str, conn: Connection | None = None, **params: Any) -> Any:
    """Run one statement: on `conn` (the caller's transaction) or committed on its own."""
    if conn is not None:
        return conn.execute(text(sql), params).first()
    with db.engine.begin() as own:
        return own.execute(text(sql), params).first()


def create(
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    *,
    trigger: str,
    queue: str | None = None,
    eta: datetime | None = None,
    schedule_id: int | None = None,
    scheduled_for: datetime | None = None,
    skip_reason: str | None = None,
    rerun_of_id: int | None = None,
    conn: Connection | None = None,
) -> int | None:
    """Record a run: `queued` (about to be published), `scheduled` (held until `eta`), or
    `skipped` (a slot not run by policy, with `skip_reason`).

    Returns the new run's id, or None when a row for task_id, or for this slot of the
    schedule, already exists (it is left untouched): the caller must then not publish.
    Raises kombu's EncodeError, before writing anything, for arguments Celery cannot encode.
    """
    call = encode_call(args, kwargs)
    if skip_reason is not None:
        state = RunState.SKIPPED
    else:
        state = RunState.SCHEDULED if eta else RunState.QUEUED
    ts = STATE_TIMESTAMP[state]
    if skip_reason is not None:
        message = skip_reason
    else:
        message = f"published by {trigger}" + (f", due {eta.isoformat()}" if eta else "")
    row = _execute(
        f"""
        WITH r AS (
            INSERT INTO job_runs (task_id, task_name, state, trigger, queue, args, kwargs,
                                  call_json, eta, schedule_id, scheduled_for, skip_reason,
                                  rerun_of_id, created_at, updated_at, {ts})
            VALUES (:task_id, :task_name, :state, :trigger, :queue,
                    CAST(:args AS jsonb), CAST(:kwargs AS jsonb), :call_json, :eta, :schedule_id,
                    :scheduled_for, :skip_reason, :rerun_of_id, :now, :now, :now)
            ON CONFLICT DO NOTHING
            RETURNING id
        )
        INSERT INTO job_events (run_id, at, state, attempt, message)
        SELECT id, :now, :state, 0, :message FROM r
        RETURNING run_id
        """,
        conn,
        task_id=task_id,
        task_name=task_name,
        state=state.value,
        trigger=trigger,
        queue=queue,
        args=call.args,
        kwargs=call.kwargs,
        call_json=call.call_json,
        eta=eta,
        schedule_id=schedule_id,
        scheduled_for=scheduled_for,
        skip_reason=skip_reason,
        rerun_of_id=rerun_of_id,
        now=utcnow(),
        message=message,
    )
    return row.run_id if row else None


def start(
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    *,
    queue: str | None,
    worker_host: str,
    worker_pid: int,
    process_id: int | None = None,
) -> tuple[int, int] | None:
    """Mark a run `running`, creating its row if no publisher did (plain Celery means).

    Returns (run id, attempt), or None when the run is already final (cancelled before it
    started, or a duplicate delivery of a finished run): the body must not run.
    """
    call = encode_call(args, kwargs)
    row = _execute(
        """
        WITH r AS (
            INSERT INTO job_runs (task_id, task_name, state, queue, args, kwargs, call_json,
                                  attempts, worker_host, worker_pid, worker_process_id,
                                  created_at, updated_at, started_at)
            VALUES (:task_id, :task_name, 'running', :queue, CAST(:args AS jsonb),
                    CAST(:kwargs AS jsonb), :call_json, 1, :host, :pid, :process_id, :now,
                    :now, :now)
            ON CONFLICT (task_id) DO UPDATE SET
                state = 'running', attempts = job_runs.attempts + 1, worker_host = :host,
                worker_pid = :pid, worker_process_id = :process_id, started_at = :now,
                updated_at = :now
            WHERE NOT job_runs.state = ANY(:settled)
            RETURNING id, attempts
        )
        INSERT INTO job_events (run_id, at, state, attempt, message)
        SELECT id, :now, 'running', attempts, :message FROM r
        RETURNING run_id, attempt
        """,
        task_id=task_id,
        task_name=task_name,
        queue=queue,
        args=call.args,
        kwargs=call.kwargs,
        call_json=call.call_json,
        host=worker_host,
        pid=worker_pid,
        process_id=process_id,
        now=utcnow(),
        message=f"started on {worker_host} pid {worker_pid}",
        settled=names(SETTLED_STATES),
    )
    return (row.run_id, row.attempt) if row else None


def _transition(
    where: str,
    state: RunState,
    message: str | None,
    sets: dict[str, str] | None = None,
    only_if_not_final: bool = True,
    conn: Connection | None = None,
    **params: Any,
) -> int | None:
    """Move one run to `state` (setting its timestamp and `sets`) and add the event."""
    ts = STATE_TIMESTAMP[state]
    assignments = {"state": ":state", ts: ":now", "updated_at": ":now", **(sets or {})}
    set_sql = ", ".join(f"{col} = {expr}" for col, expr in assignments.items())
    kept = SETTLED_STATES if state in _WORKER_REPORTS else FINAL_STATES
    guard = "AND NOT state = ANY(:kept)" if only_if_not_final else ""
    row = _execute(
        f"""
        WITH r AS (
            UPDATE job_runs SET {set_sql} WHERE {where} {guard} RETURNING id, attempts
        )
        INSERT INTO job_events (run_id, at, state, attempt, message)
        SELECT id, :now, :state, attempts, :message FROM r
        RETURNING run_id
        """,
        conn,
        state=state.value,
        now=utcnow(),
        message=message,
        kept=names(kept),
        **params,
    )
    return row.run_id if row else None


def requeued(run_id: int, reason: str, conn: Connection | None = None,
             only_from: RunState | None = None) -> int | None:
    """Back to `queued` (from `only_from` only, when given): its message is published again,
    by the caller after this or by the broker. Returns the run id, or None if unchanged."""
    if only_from is None:
        return _transition("id = :id", RunState.QUEUED, reason, conn=conn, id=run_id)
    return _transition("id = :id AND state = :from_state", RunState.QUEUED, reason, conn=conn,
                       id=run_id, from_state=only_from.value)


def unpublishable(run_id: int, reason: str, conn: Connection | None = None,
                  error_type: str = "MessageLost") -> None:
    """A run whose message cannot be published (again): lost with arguments not kept, or
    refused when it was made."""
    _transition("id = :id", RunState.FAILED, reason,
                {"error_type": ":etype", "error_message": ":emsg"}, conn=conn,
                id=run_id, emsg=reason, etype=error_type[:255])


def publish_failed(task_id: str, exc: BaseException) -> None:
    """The broker refused the message: the run can never start, and says why."""
    message = f"could not publish to the broker: {type(exc).__name__}: {exc}"
    _transition(
        "task_id = :task_id",
        RunState.FAILED,
        message,
        {"error_type": "'BrokerUnavailable'", "error_message": ":emsg"},
        task_id=task_id,
        emsg=message,
    )


def released(run_ids: list[int], conn: Connection) -> None:
    """Scheduled runs handed to the broker by the dispatcher."""
    _transition("id = ANY(:ids)", RunState.QUEUED, "released by the dispatcher", conn=conn,
                ids=run_ids)


def lost(run_id: int, reason: str) -> int | None:
    """A running run whose worker is gone (the sweep's finding)."""
    return _transition("id = :id AND state = 'running'", RunState.LOST, reason, id=run_id)


def revoke(task_id: str, reason: str,
           states: Iterable[RunState] = (RunState.SCHEDULED, RunState.QUEUED,
                                         RunState.RETRYING)) -> int | None:
    """Mark a run revoked (cancelled or stopped) if it is still in one of `states`; by
    default only runs not started, so a run a worker starts meanwhile is not recorded as
    revoked while it runs. Returns the run id, or None when nothing changed."""
    return _transition("task_id = :task_id AND state = ANY(:states)", RunState.REVOKED, reason,
                       task_id=task_id, states=[RunState(s).value for s in states])


def revoke_runs(run_ids: list[int], reason: str, states: Iterable[RunState]) -> None:
    """revoke() for many runs by id, in one statement."""
    _transition("id = ANY(:ids) AND state = ANY(:states)", RunState.REVOKED, reason,
                ids=run_ids, states=[RunState(s).value for s in states])

