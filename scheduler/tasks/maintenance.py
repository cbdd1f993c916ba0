"""Housekeeping tasks fired by the schedules in beat_schedule.py."""
from __future__ import annotations

from celery import shared_task

from scheduler import leader


@shared_task(name="beat.prune_heartbeats")
def prune_heartbeats() -> dict[str, int]:
    """Remove the heartbeats of beat processes gone for a day."""
    return {"removed": leader.prune_heartbeats()}
