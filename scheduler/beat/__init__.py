"""Celery beat on PostgreSQL: the DatabaseScheduler, its leader lock, the firing of schedules'
slots, the dispatcher of due runs, the schedules and the arithmetic of their slots."""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # `-S scheduler.beat:DatabaseScheduler`, the path of earlier releases, still resolves,
    # without importing celery.beat for every user of a module of this package.
    if name == "DatabaseScheduler":
        from scheduler.beat.scheduler import DatabaseScheduler

        return DatabaseScheduler
    raise AttributeError(name)
