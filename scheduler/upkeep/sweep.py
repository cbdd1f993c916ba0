"""The sweep: a `running` run whose worker process is gone (not seen for LOST_AFTER_S, or
exited) becomes `lost`, with an event that says why (celery#1814: without it such runs stay
STARTED for ever); a run of a task that is safe to repeat (acks_late) is queued again instead.

Liveness comes from the processes' heartbeats (scheduler.heartbeat), never from a broadcast: a
solo worker running a task, a busy prefork main process or a blocked gevent hub cannot answer
one, and a run marked lost while it runs would be repeated by nobody and reported wrongly.
A run queued again is published again by the recovery of lost messages when its message is
nowhere else (its worker's main process died with it); when only the pool child died, Celery's
main process gives the message back to the broker itself (task_reject_on_worker_lost).
"""
from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import text

from models import RunState, db
from scheduler import records

logger = logging.getLogger(__name__)

#: Runs looked at in one sweep.
BATCH = 1000

#: Running runs whose process is gone: its row says it exited, or it has not been seen for
#: :lost_after seconds; a run without a process row (its process could not register, or the
#: row was pruned) is matched by node (the run's worker_host) and pid.
_GONE_SQL = text("""
    SELECT r.id, r.task_id, r.task_name, r.worker_host, r.worker_pid,
           p.stopped_at IS NOT NULL AS exited
    FROM job_runs r
    LEFT JOIN worker_processes p ON p.id = r.worker_process_id
    WHERE r.state = 'running'
      AND r.started_at < now() - make_interval(secs => :lost_after)
      AND CASE WHEN p.id IS NOT NULL
               THEN p.stopped_at IS NOT NULL
                    OR p.last_seen_at < now() - make_interval(secs => :lost_after)
               ELSE NOT EXISTS (
                   SELECT 1 FROM worker_processes q
                   WHERE q.pid = r.worker_pid
                     AND (q.node = r.worker_host OR q.host = r.worker_host)
                     AND q.stopped_at IS NULL
                     AND q.last_seen_at >= now() - make_interval(secs => :lost_after))
          END
    ORDER BY r.id LIMIT :batch
""")


def sweep_lost_runs(celery_app: Celery, older_than_s: float) -> list[int]:
    """Mark lost the running runs whose process has not been seen for older_than_s (or
    exited), and queue again those of tasks that are safe to repeat; return the ids of the
    runs marked lost."""
    gone = db.session.execute(_GONE_SQL, {"lost_after": older_than_s, "batch": BATCH}).all()
    db.session.rollback()
    marked = []
    for run in gone:
        process = f"worker process {run.worker_host} pid {run.worker_pid}"
        why = "exited" if run.exited else f"not seen for {older_than_s:g} s"
        task = celery_app.tasks.get(run.task_name)
        if task is not None and task.acks_late:
            if records.requeued(run.id, f"{process} {why}; queued again (the task is safe "
                                "to repeat)", only_from=RunState.RUNNING):
                logger.warning("sweep: run %s (%s): %s %s; queued again", run.id,
                               run.task_id, process, why)
            continue
        if records.lost(run.id, f"lost: {process} {why}") is not None:
            marked.append(run.id)
    return marked
