"""DatabaseScheduler: Celery beat with its schedules in PostgreSQL (the default scheduler).

Celery's Scheduler keeps entries in an in-memory heap and fires what it says is due; here the
database is the only source of truth, read on every tick, so inserts, edits, enabling and
deleting take effect on the next tick without a restart (the gap django-celery-beat users
meet when its change detection misses an edit). Only `tick` is replaced; the Service loop,
signals and shutdown are Celery's.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone

from celery.beat import Scheduler
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from models import db
from scheduler.beat import dispatch, firing, leader, schedules

logger = logging.getLogger(__name__)

#: Retry delay after a database error.
ERROR_BACKOFF_S = 2.0
#: Shortest sleep between two ticks, so a burst of due work cannot spin the loop.
MIN_SLEEP_S = 0.01


class DatabaseScheduler(Scheduler):
    """Fires schedules from the `schedules` table when this beat holds the leader lock."""

    #: Longest sleep between ticks: bounds edit pick-up, takeover and release lateness.
    max_interval = 1.0

    def __init__(self, app, *args, **kwargs) -> None:
        self.flask_app = app.flask_app
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.node = f"{self.host}:{self.pid}"
        self.leadership = leader.Leadership(self.flask_app.config["DATABASE_URL"])
        with self.flask_app.app_context():
            # This beat's pooled sessions too: a leader cut off mid-transaction must not keep
            # rows locked (skipped by the next leader) until the server's two-hour default.
            leader.bound_dead_peers(db.engine)
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        import beat_schedule

        with self.flask_app.app_context():
            schedules.sync_code(beat_schedule.SCHEDULES)
        logger.info("beat: %d schedule(s) from beat_schedule.py synced", len(beat_schedule.SCHEDULES))

    @property
    def info(self) -> str:
        return "    . schedules -> PostgreSQL (schedules table); leader by advisory lock"

    def tick(self, *args, **kwargs) -> float:
        """One pass: lead or stand by; when leading, fire due slots and release due runs.

        Returns the seconds to sleep: until the next known due time, at most max_interval.
        """
        with self.flask_app.app_context():
            try:
                return self._tick(datetime.now(timezone.utc))
            except (DBAPIError, SQLAlchemyError) as exc:
                # Survive a database outage: stand down and try again shortly.
                logger.error("beat: database error (%s: %s); retrying in %.0f s",
                             type(exc).__name__, exc, ERROR_BACKOFF_S)
                self.leadership.drop()
                return ERROR_BACKOFF_S

    def _tick(self, now: datetime) -> float:
        leading = self.leadership.check()
        leader.heartbeat(self.node, self.host, self.pid, "leader" if leading else "standby", now)
        if not (leading and self.leadership.confirmed()):
            return self.max_interval
        firing.fire_due(now)
        dispatch.release_due(self.app, now, producer=self.producer)
        upcoming = [t for t in (firing.next_due(), dispatch.next_due()) if t is not None]
        if not upcoming:
            return self.max_interval
        wait = (min(upcoming) - datetime.now(timezone.utc)).total_seconds()
        return min(self.max_interval, max(MIN_SLEEP_S, wait))

    def sync(self) -> None:
        """Nothing to persist: every change is committed when it is made."""

    def close(self) -> None:
        try:
            with self.flask_app.app_context():
                leader.forget(self.node)
        except SQLAlchemyError:
            pass
        self.leadership.release()
        super().close()
