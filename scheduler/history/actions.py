"""The operator's actions on job runs: re-run, retry, cancel, stop, one run or in bulk.
Shared by the admin pages, the JSON API and the CLI; every function needs an app context.

Every action takes `by`, who acts (kept in the reason of a cancel or stop), and returns an
ActionResult, or raises RunActionError (a message for the user) or BrokerUnavailable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from celery.utils import uuid
from flask import current_app
from sqlalchemy import select, text

from models import FINAL_STATES, JobRun, RunState, db
from scheduler import payload, records
from scheduler.enqueue import PUBLISH_ERRORS, BrokerUnavailable, UnknownTask, enqueue
from scheduler.history.queries import RunFilters, matching_ids

#: Runs one bulk action touches at most, the newest that match: a cancel or a stop is one
#: statement for them all, while a re-run or a retry publishes each run (about 4 ms a run
#: here), so fewer of those fit in one web request.
BULK_MAX = 10_000
BULK_START_MAX = 1_000
#: Task ids per Celery revoke broadcast.
REVOKE_BATCH = 1_000

CANCELLABLE = (RunState.SCHEDULED, RunState.QUEUED, RunState.RETRYING)
STOPPABLE = (RunState.RUNNING,)
RETRYABLE = (RunState.FAILED, RunState.LOST)
RERUNNABLE = tuple(s for s in RunState if s in FINAL_STATES)
ACTIONS = ("rerun", "retry", "cancel", "stop")
#: Worker pools that cannot end a task once it has started (Celery's revoke with terminate
#: does nothing there): a stop is refused rather than recorded while the run goes on.
UNSTOPPABLE_POOLS = ("solo", "threads")
#: The trigger of the runs that re-runs and retries start.
RERUN_TRIGGER, RETRY_TRIGGER = "rerun", "retry"


class RunActionError(ValueError):
    """An action refused, with a message for the user."""


def _names(states: Sequence[RunState]) -> str:
    names = [s.value for s in states]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def bulk_limit(action: str) -> int:
    """How many runs one bulk `action` touches at most."""
    return BULK_START_MAX if action in ("rerun", "retry") else BULK_MAX


# --- actions -------------------------------------------------------------------------------


@dataclass
class ActionResult:
    """What an action did, for the user; run_id is the new run of a re-run or retry."""

    message: str
    run_id: int | None = None


def rerun(run: JobRun, *, by: str = "") -> ActionResult:
    """A new run of the same task, args, kwargs and queue (trigger "rerun"), linked to this
    one by rerun_of_id. Only a finished run; any number of times."""
    if RunState(run.state) not in RERUNNABLE:
        raise RunActionError(f"run {run.id} is {run.state}; only finished runs "
                             f"({_names(RERUNNABLE)}) can be re-run")
    new_id = _start_copy(run, RERUN_TRIGGER)
    return ActionResult(f"Run {run.id} re-run as run {new_id}.", new_id)


def retry(run: JobRun, *, by: str = "") -> ActionResult:
    """A failed or lost run, tried again as a NEW run (trigger "retry", linked by
    rerun_of_id), once: a second retry of the same run is refused (retry the retry).

    Not a re-publish of the same task_id: the failed run stays as it ended, its record
    final, and the worker would not start a task_id whose run is final.
    """
    try:
        # Locked, so that two operators (or a double click) cannot both retry it. NO KEY
        # UPDATE: the new run's foreign key to this row (inserted on another connection)
        # must not wait for this lock.
        state = db.session.scalar(select(JobRun.state).where(JobRun.id == run.id)
                                  .with_for_update(key_share=True))
        if state is None:
            raise RunActionError(f"run {run.id} no longer exists")
        if RunState(state) not in RETRYABLE:
            raise RunActionError(f"run {run.id} is {state}; only {_names(RETRYABLE)} runs "
                                 "can be retried")
        earlier = db.session.execute(
            select(JobRun.id, JobRun.state).where(JobRun.rerun_of_id == run.id,
                                                  JobRun.trigger == RETRY_TRIGGER)
            .order_by(JobRun.id.desc()).limit(1)).first()
        if earlier is not None:
            raise RunActionError(f"run {run.id} was already retried as run {earlier.id} "
                                 f"({earlier.state}); retry that one if it failed")
        new_id = _start_copy(run, RETRY_TRIGGER)
    finally:
        db.session.rollback()
    return ActionResult(f"Run {run.id} retried as a new run {new_id}.", new_id)


def _start_copy(run: JobRun, trigger: str) -> int:
    """Enqueue a copy of run and link it; return the new run's id. BrokerUnavailable when
    Redis refused it (the new run is then recorded failed, and linked all the same)."""
    try:
        args, kwargs = payload.decode_call(run.call_json, run.args, run.kwargs)
    except payload.CallNotKept:
        raise RunActionError(f"run {run.id} kept no copy of its arguments (they were too big "
                             "or not JSON); it cannot be started again from here") from None
    task_id = uuid()
    try:
        enqueue(run.task_name, args, kwargs, trigger=trigger, queue=run.queue,
                task_id=task_id, rerun_of_id=run.id)
    except UnknownTask:
        raise RunActionError(f"task {run.task_name} is not known here; run {run.id} cannot "
                             "be started again") from None
    return db.session.scalar(select(JobRun.id).where(JobRun.task_id == task_id))


def cancel(run: JobRun, *, by: str = "") -> ActionResult:
    """A run not started yet (scheduled, queued, or waiting to retry): recorded revoked,
    which no worker starts, and the workers are told (Celery revoke) to drop its message."""
    if RunState(run.state) not in CANCELLABLE or not _revoke([run.id], CANCELLABLE,
                                                             _reason("cancelled", by)):
        raise RunActionError(f"run {run.id} is {_state_now(run)}; only {_names(CANCELLABLE)} "
                             "runs can be cancelled")
    return ActionResult(f"Run {run.id} cancelled.{_tell_workers([run.task_id])}")


def stop(run: JobRun, *, by: str = "") -> ActionResult:
    """A running run: its worker process gets SIGTERM (Celery revoke with terminate) and the
    run is recorded revoked. BrokerUnavailable when the workers cannot be told (nothing is
    recorded then: the run goes on)."""
    if RunState(run.state) not in STOPPABLE:
        raise RunActionError(f"run {run.id} is {run.state}; only running runs can be stopped")
    pools = _unstoppable([run.id])
    if run.id in pools:
        raise RunActionError(f"run {run.id} runs on a worker with the {pools[run.id]} pool, "
                             "which cannot stop a task once it has started; it goes on until "
                             "it ends")
    _terminate([run.task_id])
    if _revoke([run.id], STOPPABLE, _reason("stopped", by)) or _state_now(run) == "revoked":
        return ActionResult(f"Run {run.id} stopped.")
    raise RunActionError(f"run {run.id} ended ({_state_now(run)}) before it could be stopped")


def _unstoppable(run_ids: list[int]) -> dict[int, str]:
    """{run id: pool} of the runs whose worker's pool cannot end a started task."""
    rows = db.session.execute(text(
        "SELECT r.id, p.pool FROM job_runs r JOIN worker_processes p "
        "ON p.id = r.worker_process_id WHERE r.id = ANY(:ids) AND p.pool = ANY(:pools)"),
        {"ids": list(run_ids), "pools": list(UNSTOPPABLE_POOLS)}).all()
    return {r.id: r.pool for r in rows}


def _reason(verb: str, by: str) -> str:
    return f"{verb} by {by}" if by else verb


def _state_now(run: JobRun) -> str:
    return db.session.scalar(select(JobRun.state).where(JobRun.id == run.id)) or "gone"


def _revoke(run_ids: list[int], states: Sequence[RunState], reason: str) -> list[int]:
    """Record as revoked those of run_ids still in `states`, in one statement; return them.
    Ends the session's transaction first: the update runs on a connection of its own
    (scheduler.records), which must not wait for a lock this session holds."""
    if not run_ids:
        return []
    names = [s.value for s in states]
    eligible = list(db.session.scalars(select(JobRun.id).where(JobRun.id.in_(run_ids),
                                                               JobRun.state.in_(names))))
    db.session.rollback()
    if not eligible:
        return []
    records.revoke_runs(eligible, reason, states)
    return list(db.session.scalars(select(JobRun.id).where(JobRun.id.in_(eligible),
                                                           JobRun.state == "revoked")))


def _tell_workers(task_ids: list[str]) -> str:
    """Celery revoke, so workers drop messages they hold; best effort, as the record alone
    already keeps the run from starting. Returns a note for the user when it failed."""
    try:
        control = current_app.extensions["celery"].control
        for i in range(0, len(task_ids), REVOKE_BATCH):
            control.revoke(task_ids[i:i + REVOKE_BATCH])
    except PUBLISH_ERRORS:
        return (" The task queue is not reachable to tell the workers; they will skip it "
                "when its message arrives.")
    return ""


def _terminate(task_ids: list[str]) -> None:
    try:
        control = current_app.extensions["celery"].control
        for i in range(0, len(task_ids), REVOKE_BATCH):
            control.revoke(task_ids[i:i + REVOKE_BATCH], terminate=True, signal="SIGTERM")
    except PUBLISH_ERRORS as exc:
        raise BrokerUnavailable(f"the workers cannot be reached: {exc}") from exc


# --- bulk ----------------------------------------------------------------------------------


@dataclass
class BulkResult:
    action: str
    #: Runs the action was applied to, and those it did not apply to.
    done: int
    skipped: int
    message: str


_PAST = {"rerun": "Re-ran", "retry": "Retried", "cancel": "Cancelled", "stop": "Stopped"}


def bulk(action: str, *, ids: Sequence[int] | None = None, filters: RunFilters | None = None,
         by: str = "") -> BulkResult:
    """Apply an action to the runs `ids`, or to the newest bulk_limit(action) runs matching
    `filters`.
    Runs the action does not apply to are skipped and counted. If the broker goes away
    midway, the runs done so far stay done and the message says how far it got."""
    if action not in ACTIONS:
        raise RunActionError(f"unknown action {action!r}")
    limit = bulk_limit(action)
    if ids is not None:
        ids = sorted({int(i) for i in ids}, reverse=True)
        if len(ids) > limit:
            raise RunActionError(f"at most {limit:,} runs per {action}")
    elif filters is not None:
        ids = matching_ids(filters, limit)
    if not ids:
        raise RunActionError("no runs selected")
    rows = db.session.execute(select(JobRun.id, JobRun.task_id, JobRun.state)
                              .where(JobRun.id.in_(ids)).order_by(JobRun.id.desc())).all()
    note = ""
    if action == "cancel":
        done = set(_revoke([r.id for r in rows], CANCELLABLE, _reason("cancelled", by)))
        note = _tell_workers([r.task_id for r in rows if r.id in done])
        done_n = len(done)
    elif action == "stop":
        unstoppable = _unstoppable([r.id for r in rows])
        running = [r for r in rows if r.state in {s.value for s in STOPPABLE}
                   and r.id not in unstoppable]
        _terminate([r.task_id for r in running])
        done_n = len(_revoke([r.id for r in running], STOPPABLE, _reason("stopped", by)))
    else:
        done_n, note = _bulk_start(action, [r.id for r in rows], by)
    skipped = len(ids) - done_n
    message = f"{_PAST[action]} {done_n:,} run{'s' if done_n != 1 else ''}"
    if skipped:
        message += f"; {skipped:,} skipped ({_skip_reason(action)})"
    return BulkResult(action, done_n, skipped, message + "." + note)


def _skip_reason(action: str) -> str:
    return {"rerun": f"not {_names(RERUNNABLE)}, or not startable from here",
            "retry": f"not {_names(RETRYABLE)}, or retried before",
            "cancel": f"not {_names(CANCELLABLE)}",
            "stop": "not running, or on a solo or threads worker"}[action]


def _bulk_start(action: str, run_ids: list[int], by: str) -> tuple[int, str]:
    act = rerun if action == "rerun" else retry
    done = 0
    for run_id in run_ids:
        run = db.session.get(JobRun, run_id)
        if run is None:
            continue
        try:
            act(run, by=by)
        except RunActionError:
            continue
        except BrokerUnavailable:
            return done, (" The task queue is not reachable: the other runs were not "
                          "started.")
        finally:
            db.session.expunge_all()  # 10,000 runs need not stay in the session
        done += 1
    return done, ""
