"""Housekeeping tasks fired by the schedules in beat_schedule.py."""
from __future__ import annotations

from celery import shared_task
from flask import current_app

from scheduler import leader
from scheduler.sweep import sweep_lost_runs


@shared_task(name="beat.prune_heartbeats")
def prune_heartbeats() -> dict[str, int]:
    """Remove the heartbeats of beat processes gone for a day."""
    return {"removed": leader.prune_heartbeats()}


@shared_task(name="runs.sweep")
def sweep_runs() -> dict[str, int]:
    """Mark lost the running runs whose worker is gone."""
    lost = sweep_lost_runs(current_app.extensions["celery"], current_app.config["LOST_AFTER_S"])
    return {"lost": len(lost)}
