"""Firing schedules: turn due slots into run rows, applying the overlap and misfire policies.

Each schedule is handled in one transaction that locks its row, inserts the run rows and moves
its cursor (`last_slot_at`, `next_fire_at`). A fired run is inserted `scheduled` with its slot
as due time, so the dispatcher publishes it in the same tick: one path to the broker. The
unique `(schedule_id, scheduled_for)` makes a second fire of a slot impossible even when two
beats both believe they lead.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from celery.utils import uuid
from sqlalchemy import Connection, select, text, update

from models import Schedule, db
from models.states import UNFINISHED_STATES, names
from scheduler import records
from scheduler.beat.schedules import timing_of
from scheduler.beat.slots import Timing, count_between, next_slot, slots_between

logger = logging.getLogger(__name__)

#: Windows searched backwards from now for the latest due slot, before the whole range.
_LOOKBACK_WINDOWS = (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1),
                     timedelta(days=32), timedelta(days=367))
_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


def fire_due(now: datetime) -> int:
    """Handle every enabled schedule with a slot due at `now`; return how many runs fired."""
    table = Schedule.__table__
    with db.engine.connect() as conn:
        due_ids = conn.execute(
            select(table.c.id).where(
                table.c.enabled,
                (table.c.next_fire_at.is_(None)) | (table.c.next_fire_at <= now),
            ).order_by(table.c.next_fire_at.nulls_first())
        ).scalars().all()
    fired = 0
    for schedule_id in due_ids:
        with db.engine.begin() as conn:
            fired += _fire_schedule(conn, schedule_id, now)
    return fired


def next_due() -> datetime | None:
    """The earliest planned slot of an enabled schedule (for beat's sleep)."""
    with db.engine.connect() as conn:
        return conn.execute(text(
            "SELECT min(next_fire_at) FROM schedules WHERE enabled"
        )).scalar()


def _fire_schedule(conn: Connection, schedule_id: int, now: datetime) -> int:
    table = Schedule.__table__
    row = conn.execute(
        select(table).where(table.c.id == schedule_id, table.c.enabled)
        .with_for_update(skip_locked=True)
    ).mappings().first()
    if row is None:  # disabled or removed meanwhile, or another beat holds it
        return 0
    timing = timing_of(row)
    if row["next_fire_at"] is None:
        # New, edited or re-enabled: plan from now (a clocked schedule from its last slot,
        # so that a one-off moment in the past still fires once).
        cursor = (row["last_slot_at"] or _EARLIEST) if timing.kind == "clocked" else now
        _move_cursor(conn, schedule_id, cursor, next_slot(timing, cursor))
        return 0
    if row["next_fire_at"] > now:
        return 0
    cursor = row["last_slot_at"] or row["next_fire_at"] - timedelta(microseconds=1)
    latest = _latest_slot(timing, cursor, now)
    if latest is None:  # the definition has no slot left in (cursor, now]
        _move_cursor(conn, schedule_id, now, next_slot(timing, now))
        return 0
    missed = count_between(timing, cursor, now) - 1
    first = row["next_fire_at"]
    late = (now - latest).total_seconds() > row["misfire_grace_s"]
    fire = not (late and row["misfire"] == "skip")

    if missed > 0 or not fire:
        count = missed + (0 if fire else 1)
        until = latest if not fire else _previous_missed(timing, cursor, latest)
        why = "beat was not running" if fire else "fired too late (misfire policy skip)"
        reason = (f"missed {count} slot{'s' if count != 1 else ''} between "
                  f"{first.isoformat()} and {until.isoformat()}: {why}")
        if fire:
            reason += "; one catch-up run fired (misfire policy run_once)"
        _insert(conn, row, first, skip_reason=reason)

    fired = 0
    if fire:
        busy = row["overlap"] == "skip" and _unfinished_run(conn, schedule_id)
        if busy:
            _insert(conn, row, latest,
                    skip_reason=f"previous run {busy[0]} is still {busy[1]} (overlap policy skip)")
        elif _insert(conn, row, latest, eta=latest):
            fired = 1
    counted = {"last_run_at": now, "total_run_count": Schedule.total_run_count + 1}
    _move_cursor(conn, schedule_id, latest, next_slot(timing, latest), **(counted if fired else {}))
    return fired


def _insert(conn: Connection, row: Any, slot: datetime, *, eta: datetime | None = None,
            skip_reason: str | None = None) -> bool:
    run_id = records.create(
        uuid(), row["task"], row["args"], row["kwargs"], trigger="beat", queue=row["queue"],
        eta=eta, schedule_id=row["id"], scheduled_for=slot, skip_reason=skip_reason, conn=conn,
    )
    return run_id is not None


def _move_cursor(conn: Connection, schedule_id: int, cursor: datetime,
                 next_fire: datetime | None, **values: Any) -> None:
    """Advance the cursor; a schedule with no slot left (a clocked one that fired, one past
    its end) is disabled, which is how it shows as finished."""
    if next_fire is None:
        values["enabled"] = False
    conn.execute(update(Schedule).where(Schedule.id == schedule_id)
                 .values(last_slot_at=cursor, next_fire_at=next_fire, **values))


def _unfinished_run(conn: Connection, schedule_id: int) -> tuple[str, str] | None:
    found = conn.execute(text(
        "SELECT task_id, state FROM job_runs WHERE schedule_id = :id "
        "AND state = ANY(:unfinished) ORDER BY id DESC LIMIT 1"
    ), {"id": schedule_id, "unfinished": names(UNFINISHED_STATES)}).first()
    return (found.task_id, found.state) if found else None


def _latest_slot(timing: Timing, after: datetime, until: datetime) -> datetime | None:
    """The last slot in (after, until], searched in growing windows back from `until`."""
    for window in _LOOKBACK_WINDOWS:
        start = max(after, until - window)
        found = slots_between(timing, start, until)
        if found:
            return found[-1]
        if start == after:
            return None
    found = slots_between(timing, after, until, limit=10_000_000)
    return found[-1] if found else None


def _previous_missed(timing: Timing, after: datetime, latest: datetime) -> datetime:
    """The last slot before `latest` (there is one: the caller counted it)."""
    return _latest_slot(timing, after, latest - timedelta(microseconds=1)) or latest
