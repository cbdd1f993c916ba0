"""Housekeeping tasks fired by the schedules in beat_schedule.py; each is idempotent, so each
is acknowledged late and runs again if its worker dies."""
from __future__ import annotations

from celery import shared_task
from flask import current_app

from models import db
from scheduler import heartbeat
from scheduler.beat import leader
from scheduler.upkeep import retention
from scheduler.upkeep.recovery import requeue_lost_messages
from scheduler.upkeep.sweep import sweep_lost_runs


@shared_task(name="beat.prune_heartbeats", acks_late=True)
def prune_heartbeats() -> dict[str, int]:
    """Remove the heartbeats of beat and worker processes gone for a day."""
    return {"removed": leader.prune_heartbeats(), "workers_removed": heartbeat.prune(db.engine)}


@shared_task(name="runs.prune", acks_late=True)
def prune_runs() -> dict[str, int]:
    """Write the daily rollups, then delete finished runs older than RUN_RETENTION_DAYS."""
    result = retention.prune(int(current_app.config["RUN_RETENTION_DAYS"]))
    return {"deleted": result.deleted, "days_rolled_up": result.rollups.written,
            "days_sealed": result.rollups.sealed}


@shared_task(name="runs.sweep", acks_late=True)
def sweep_runs() -> dict[str, int]:
    """Mark lost the running runs whose worker is gone; publish again the queued runs whose
    message is gone."""
    celery_app, config = current_app.extensions["celery"], current_app.config
    lost = sweep_lost_runs(celery_app, config["LOST_AFTER_S"])
    requeued = requeue_lost_messages(celery_app, config["REQUEUE_AFTER_S"],
                                     config["REQUEUE_AFTER_LOSS_S"])
    return {"lost": len(lost), "requeued": len(requeued)}
