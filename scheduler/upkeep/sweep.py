"""The sweep: a `running` run that no worker runs any more (its worker died, or was killed with
the run inside) becomes `lost`, with an event that says why (celery#1814: without it such runs
stay STARTED for ever)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from celery import Celery
from sqlalchemy import text

from models import db
from scheduler import broker, records

logger = logging.getLogger(__name__)

#: Runs looked at in one sweep.
BATCH = 1000


def sweep_lost_runs(celery_app: Celery, older_than_s: float) -> list[int]:
    """Mark lost the runs `running` for longer than older_than_s that no worker reports as
    active; return their ids. Does nothing when the broker does not answer."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
    candidates = db.session.execute(text(
        "SELECT id, task_id, worker_host FROM job_runs WHERE state = 'running' "
        "AND started_at < :cutoff ORDER BY id LIMIT :batch"
    ), {"cutoff": cutoff, "batch": BATCH}).all()
    db.session.rollback()
    if not candidates:
        return []
    try:
        found = broker.workers(celery_app)
    except broker.BROKER_ERRORS as exc:
        logger.warning("sweep: the broker does not answer (%s); nothing marked lost", exc)
        return []
    online = {w.node for w in found}
    active = {t.get("id") for w in found for t in w.active}
    marked = []
    for run in candidates:
        if run.task_id in active:
            continue
        where = ("no longer runs it" if run.worker_host in online
                 else "does not answer")
        if records.lost(run.id, f"lost: worker {run.worker_host} {where}") is not None:
            marked.append(run.id)
    return marked
