"""The dispatcher: publishes `scheduled` runs whose due time has come (countdowns, ETAs, fires).

Rows are locked with FOR UPDATE SKIP LOCKED, published, then marked `queued` in the same
transaction. A crash between the publish and the commit leaves the row `scheduled`, so it is
published again with the same task_id: at least once, never lost; the worker does not run a
task_id whose run is already final.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from celery import Celery
from flask import current_app
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from models import db
from scheduler import payload, records
from scheduler.enqueue import PUBLISH_ERRORS

logger = logging.getLogger(__name__)

#: Rows released per transaction.
BATCH = 500
_AFTER_COMMIT = "beatkeeper_release_after_commit"


def release_due(celery_app: Celery, now: datetime, producer=None,
                run_ids: list[int] | None = None) -> int:
    """Publish every scheduled run due at `now` (only `run_ids`, when given); return how many
    were released. A run whose message cannot be made (its call not kept, a task that refuses
    its arguments) is recorded failed with the reason, and the others go on."""
    released = 0
    only = "AND id = ANY(:ids) " if run_ids is not None else ""
    with celery_app.producer_or_acquire(producer) as prod:
        while True:
            with db.engine.begin() as conn:
                rows = conn.execute(text(
                    "SELECT id, task_id, task_name, args, kwargs, call_json, queue "
                    f"FROM job_runs WHERE state = 'scheduled' AND eta <= :now {only}"
                    "ORDER BY eta, id LIMIT :batch FOR UPDATE SKIP LOCKED"
                ), {"now": now, "batch": BATCH, "ids": run_ids}).all()
                sent, refused = [], 0
                for row in rows:
                    try:
                        publish_run(celery_app, row, prod)
                    except PUBLISH_ERRORS as exc:
                        logger.warning("dispatcher: broker unavailable (%s); will retry", exc)
                        break
                    except Exception as exc:  # noqa: BLE001 - one bad row must not stop beat
                        reason = f"could not publish: {type(exc).__name__}: {exc}"
                        logger.error("dispatcher: run %s (%s): %s", row.id, row.task_id, reason)
                        records.unpublishable(row.id, reason, conn=conn,
                                              error_type=type(exc).__name__)
                        refused += 1
                        continue
                    sent.append(row.id)
                if sent:
                    records.released(sent, conn)
            released += len(sent)
            if len(rows) < BATCH or len(sent) + refused < len(rows):
                return released


def release_after_commit(session: Session, run_id: int) -> None:
    """Publish this scheduled, already-due run as soon as `session` commits.

    The row is written in the caller's transaction, so the message must not go before the
    commit. If the publish fails, the row stays `scheduled` and the beat's dispatcher
    releases it on its next tick: nothing is lost.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(run_id)


@event.listens_for(Session, "after_commit")
def _release_committed(session: Session) -> None:
    run_ids = session.info.pop(_AFTER_COMMIT, None)
    if not run_ids:
        return
    try:
        release_due(current_app.extensions["celery"], datetime.now(timezone.utc),
                    run_ids=run_ids)
    except Exception as exc:  # the beat's dispatcher will release them
        logger.warning("could not publish right after the commit (%s); beat will", exc)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def next_due() -> datetime | None:
    """The earliest due time of a scheduled run (for beat's sleep)."""
    with db.engine.connect() as conn:
        return conn.execute(text(
            "SELECT min(eta) FROM job_runs WHERE state = 'scheduled'"
        )).scalar()


def publish_run(celery_app: Celery, row, producer, retries: int | None = None) -> None:
    """Publish the message of a run that has its row (task_id, task_name, args, kwargs,
    call_json, queue) with the exact call it was given; `retries` carries the count of a run
    published again after a retry, so that Celery's max_retries still counts from where it
    was. Raises payload.CallNotKept when the row kept no usable copy of its call."""
    args, kwargs = payload.decode_call(row.call_json, row.args, row.kwargs)
    options = {"producer": producer}
    if retries:
        options["retries"] = retries
    if row.queue:
        options["queue"] = row.queue
    task = celery_app.tasks.get(row.task_name)
    if task is not None and hasattr(task, "publish"):
        task.publish(row.task_id, args, kwargs, **options)
    else:  # not registered here: publish by name; the worker that knows it runs it
        celery_app.send_task(row.task_name, args, kwargs, task_id=row.task_id, **options)
