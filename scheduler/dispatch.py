"""The dispatcher: publishes `scheduled` runs whose due time has come (countdowns, ETAs, fires).

Rows are locked with FOR UPDATE SKIP LOCKED, published, then marked `queued` in the same
transaction. A crash between the publish and the commit leaves the row `scheduled`, so it is
published again with the same task_id: at least once, never lost; the worker does not run a
task_id whose run is already final.
"""
from __future__ import annotations

import logging
from datetime import datetime

from celery import Celery
from sqlalchemy import text

from models import db
from scheduler import records
from scheduler.task import PUBLISH_ERRORS

logger = logging.getLogger(__name__)

#: Rows released per transaction.
BATCH = 500


def release_due(celery_app: Celery, now: datetime, producer=None) -> int:
    """Publish every scheduled run due at `now`; return how many were released."""
    released = 0
    with celery_app.producer_or_acquire(producer) as prod:
        while True:
            with db.engine.begin() as conn:
                rows = conn.execute(text(
                    "SELECT id, task_id, task_name, args, kwargs, queue FROM job_runs "
                    "WHERE state = 'scheduled' AND eta <= :now ORDER BY eta, id "
                    "LIMIT :batch FOR UPDATE SKIP LOCKED"
                ), {"now": now, "batch": BATCH}).all()
                sent = []
                for row in rows:
                    try:
                        _publish(celery_app, row, prod)
                    except PUBLISH_ERRORS as exc:
                        logger.warning("dispatcher: broker unavailable (%s); will retry", exc)
                        break
                    sent.append(row.id)
                if sent:
                    records.released(sent, conn)
            released += len(sent)
            if len(rows) < BATCH or len(sent) < len(rows):
                return released


def next_due() -> datetime | None:
    """The earliest due time of a scheduled run (for beat's sleep)."""
    with db.engine.connect() as conn:
        return conn.execute(text(
            "SELECT min(eta) FROM job_runs WHERE state = 'scheduled'"
        )).scalar()


def _publish(celery_app: Celery, row, producer) -> None:
    options = {"producer": producer}
    if row.queue:
        options["queue"] = row.queue
    task = celery_app.tasks.get(row.task_name)
    if task is not None and hasattr(task, "publish"):
        task.publish(row.task_id, row.args, row.kwargs, **options)
    else:  # not registered here: publish by name; the worker that knows it runs it
        celery_app.send_task(row.task_name, row.args, row.kwargs, task_id=row.task_id, **options)
