"""Bounded history: daily rollups of job runs, then pruning of old runs in short batches.

Issue 7. `flask jobs prune` and the scheduled `runs.prune` both call `prune()`:

1. `roll_up()` writes job_run_daily for complete UTC days (by `created_at`) that have runs:
   days never rolled up (older ones too, on the first prune after an upgrade), days younger
   than SETTLE_DAYS (their runs' states still change), and, sealing them, the days about to
   lose runs. A day's rows are replaced as a whole in one transaction (delete, insert), so
   re-running writes the same figures, never doubles them. A sealed day is never written
   again: its runs may be gone.
2. The deletes: finished runs older than the cutoff, except the last failure of each task and
   the newest KEEP_PER_SCHEDULE runs of each schedule, PRUNE_BATCH at a time, each batch its
   own transaction (job_events go with their runs by ON DELETE CASCADE).

Rollups themselves are small (one row per day, task and state) and are kept.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, text

from models import FINAL_STATES, db, utcnow
from models.job import RUN_SECONDS_SQL
from models.states import names
from scheduler.history.stats import floor_time

logger = logging.getLogger(__name__)

DAY = timedelta(days=1)
#: Runs one prune statement deletes at most (each batch is its own short transaction).
PRUNE_BATCH = 5_000
#: Runs of each schedule a prune always keeps, the newest.
KEEP_PER_SCHEDULE = 100
#: Complete days younger than this are recomputed by every rollup: runs created that day may
#: still be waiting (countdowns), running or retrying. It covers the dashboard's 7-day chart.
SETTLE_DAYS = 7
#: Namespace of the advisory lock taken per day while its rollup is written ("bkro" as an
#: int4; the day's ordinal is the second key), so two prunes never write one day at once.
ROLLUP_LOCK_NS = int.from_bytes(b"bkro", "big")


#: Duration of a run that ran to an end, in ms.
_DURATION_MS = f"1000 * {RUN_SECONDS_SQL}::float8"

_ROLL_UP_SQL = text(f"""
    INSERT INTO job_run_daily (day, task_name, state, runs, timed, duration_sum_ms, p50_ms,
                               p95_ms, sealed, computed_at)
    SELECT :day, task_name, state, count(*), count(ms), coalesce(sum(ms), 0),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), :sealed, now()
    FROM (SELECT task_name, state, {_DURATION_MS} AS ms FROM job_runs
          WHERE created_at >= :start AND created_at < :end) AS r
    GROUP BY task_name, state
""")

#: One batch of prunable runs: finished, created and last changed before the cutoff, not the
#: last failure of its task, not among the newest KEEP_PER_SCHEDULE runs of its schedule.
#: The keep sets are recomputed per statement, so runs arriving meanwhile are respected.
_PRUNE_SQL = text(f"""
    WITH last_failures AS (
        SELECT max(id) AS id FROM job_runs WHERE state = 'failed' GROUP BY task_name
    ), schedule_floors AS (
        SELECT s.id AS schedule_id,
               (SELECT r.id FROM job_runs r WHERE r.schedule_id = s.id
                ORDER BY r.id DESC OFFSET {KEEP_PER_SCHEDULE - 1} LIMIT 1) AS floor_id
        FROM schedules s
    ), victims AS (
        SELECT r.id FROM job_runs r
        LEFT JOIN schedule_floors f ON f.schedule_id = r.schedule_id
        WHERE r.created_at < :cutoff AND r.updated_at < :cutoff AND r.state = ANY(:final)
          AND (r.schedule_id IS NULL OR r.id < f.floor_id)
          AND r.id NOT IN (SELECT id FROM last_failures)
        ORDER BY r.id
        LIMIT :batch
    )
    DELETE FROM job_runs WHERE id IN (SELECT id FROM victims)
""")


@dataclass
class RollupResult:
    #: Days whose rollup was (re)written, and how many of them were sealed by it.
    written: int = 0
    sealed: int = 0


@dataclass
class PruneResult:
    deleted: int
    rollups: RollupResult


def _next_day_with_runs(conn: Connection, after: datetime | None,
                        before: datetime) -> datetime | None:
    """The first UTC day at or after `after` holding a run created before `before` (one probe
    of the created_at index, so days without runs cost nothing)."""
    where = "created_at < :before" + ("" if after is None else " AND created_at >= :after")
    first = conn.execute(text(f"SELECT min(created_at) FROM job_runs WHERE {where}"),
                         {"before": before, "after": after}).scalar()
    return None if first is None else floor_time(first, DAY)


def _roll_up_day(conn: Connection, day: datetime, seal: bool, settling: bool) -> bool:
    """Write the rollup of one day if it needs it; return whether it was written."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :day)"),
                 {"ns": ROLLUP_LOCK_NS, "day": day.toordinal()})
    # NULL: never rolled up; false: rolled up, may be recomputed; true: sealed.
    sealed = conn.execute(text("SELECT bool_or(sealed) FROM job_run_daily WHERE day = :day"),
                          {"day": day.date()}).scalar()
    if sealed or not (seal or settling or sealed is None):
        return False
    conn.execute(text("DELETE FROM job_run_daily WHERE day = :day"), {"day": day.date()})
    conn.execute(_ROLL_UP_SQL, {"day": day.date(), "start": day, "end": day + DAY,
                                "sealed": seal})
    return True


def roll_up(now: datetime | None = None, seal_before: datetime | None = None) -> RollupResult:
    """Write the rollups of the complete UTC days that have runs and need one (see the module
    docstring); seal the days holding runs created before `seal_before`. One short
    transaction per day."""
    today = floor_time(now or utcnow(), DAY)
    settle_from = today - SETTLE_DAYS * DAY
    result = RollupResult()
    day: datetime | None = None
    while True:
        with db.engine.begin() as conn:
            day = _next_day_with_runs(conn, None if day is None else day + DAY, today)
            if day is None:
                return result
            seal = seal_before is not None and day < seal_before
            if _roll_up_day(conn, day, seal, settling=day >= settle_from):
                result.written += 1
                result.sealed += seal


def prune(days: int, batch: int = PRUNE_BATCH, now: datetime | None = None) -> PruneResult:
    """Roll up, then delete finished runs older than `days` (their events go with them),
    batch by batch, each in its own transaction; keeps the last failure of each task and the
    newest KEEP_PER_SCHEDULE runs of each schedule."""
    if days < 1:
        raise ValueError("runs are kept at least 1 day (today's are not rolled up yet)")
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    # Every day that may lose runs below is sealed first, with the runs it has now.
    rollups = roll_up(now, seal_before=cutoff)
    deleted = 0
    while True:
        with db.engine.begin() as conn:
            n = conn.execute(_PRUNE_SQL, {"cutoff": cutoff, "final": names(FINAL_STATES),
                                          "batch": batch}).rowcount
        deleted += n
        if n < batch:
            break
    logger.info("prune: %d run(s) older than %d days deleted; %d day rollup(s) written, "
                "%d sealed", deleted, days, rollups.written, rollups.sealed)
    return PruneResult(deleted, rollups)
