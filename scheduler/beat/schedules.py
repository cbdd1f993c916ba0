"""Schedule definitions: validation, create/edit/enable/remove/run-now, and the sync from code.

The CLI (and later the admin pages and the API) change schedules only through these functions.
Any change by an operator clears `next_fire_at`, so beat plans the schedule afresh from now
instead of "catching up" slots that belong to the old definition or to a disabled period.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from flask import current_app
from kombu.utils.json import dumps as celery_dumps
from sqlalchemy import delete, select, text

from models import Schedule, db, utcnow
from models.schedule import MISFIRE_POLICIES, OVERLAP_POLICIES
from scheduler.beat import slots, wording
from scheduler.enqueue import enqueue
from scheduler.beat.slots import ScheduleError, Timing

#: Advisory lock held while code schedules are synced ("bk-sync!" read as 64-bit ASCII).
SYNC_LOCK_KEY = int.from_bytes(b"bk-sync!", "big")

#: The columns a definition sets (from code or from an operator).
DEFINITION_FIELDS = (
    "task", "kind", "every_s", "cron", "timezone", "clocked_at", "args", "kwargs", "queue",
    "start_at", "end_at", "overlap", "misfire", "misfire_grace_s",
)


def timing_of(schedule: Schedule | Mapping[str, Any]) -> Timing:
    get = schedule.get if isinstance(schedule, Mapping) else lambda k: getattr(schedule, k)
    return Timing(kind=get("kind"), every_s=get("every_s"), cron=get("cron"),
                  tz=get("timezone") or "UTC", at=get("clocked_at"),
                  start_at=get("start_at"), end_at=get("end_at"))


def describe(schedule: Schedule) -> str:
    return wording.describe(timing_of(schedule))


def next_fire_times(schedule: Schedule, count: int = 5,
                    after: datetime | None = None) -> list[datetime]:
    """The next `count` slots after `after` (default now) under the current definition."""
    timing, cursor, found = timing_of(schedule), after or utcnow(), []
    while len(found) < count:
        cursor = slots.next_slot(timing, cursor)
        if cursor is None:
            break
        found.append(cursor)
    return found


def parse_time(value: str | datetime | None, tz: str = "UTC") -> datetime | None:
    """An ISO 8601 time; one without an offset is read in `tz`."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ScheduleError(f"cannot read time {value!r}: use ISO 8601, "
                                "e.g. 2026-12-24T18:00+01:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=slots.zone(tz))
    return value.astimezone(timezone.utc)


def _json_value(value: Any, kind: type, label: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ScheduleError(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(value, (list, tuple) if kind is list else kind):
        raise ScheduleError(f"{label} must be a JSON {'array' if kind is list else 'object'}")
    try:
        # Python values of a schedule defined in code (a date, a Decimal) are stored as
        # Celery's JSON encodes them; the worker decodes them as it would from any message.
        return json.loads(celery_dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ScheduleError(f"{label} cannot be sent in a Celery JSON message: {exc}") from None


def _check_task(name: str) -> str:
    tasks = current_app.extensions["celery"].tasks
    if not name or name not in tasks or name.startswith("celery."):
        known = ", ".join(sorted(t for t in tasks if not t.startswith("celery.")))
        raise ScheduleError(f"unknown task {name!r}; registered tasks: {known}")
    return name


def definition(values: Mapping[str, Any], current: Schedule | None = None) -> dict[str, Any]:
    """Validate `values` (merged over `current` for an edit) and return schedule columns.

    Timing is given as one of every (e.g. "10s"), cron (five fields, with tz) or at (a
    moment). Raises ScheduleError with a message for the user; nothing is written.
    """
    cols = {f: getattr(current, f) for f in DEFINITION_FIELDS} if current else {}
    given = {k: v for k, v in values.items() if v is not None}
    if "task" in given:
        cols["task"] = _check_task(str(given["task"]))
    elif not current:
        raise ScheduleError("a task name is required")
    tz = given.get("tz", cols.get("timezone") or "UTC")
    slots.zone(tz)
    cols["timezone"] = tz
    timing_keys = [k for k in ("every", "cron", "at") if k in given]
    if len(timing_keys) > 1:
        raise ScheduleError("give only one of every, cron or at")
    if timing_keys:
        cols.update(kind=None, every_s=None, cron=None, clocked_at=None)
        key = timing_keys[0]
        if key == "every":
            cols.update(kind="interval", every_s=slots.parse_every(given["every"]))
        elif key == "cron":
            slots.parse_cron(str(given["cron"]))
            cols.update(kind="crontab", cron=str(given["cron"]).strip())
        else:
            cols.update(kind="clocked", clocked_at=parse_time(given["at"], tz))
    elif not current:
        raise ScheduleError("a timing is required: every (e.g. 10s), cron or at")
    if "args" in given:
        cols["args"] = _json_value(given["args"], list, "args")
    if "kwargs" in given:
        cols["kwargs"] = _json_value(given["kwargs"], dict, "kwargs")
    for key in ("start_at", "end_at"):
        if key in given:
            cols[key] = parse_time(given[key], tz)
    if "queue" in given:
        cols["queue"] = str(given["queue"]) or None
    for key, allowed in (("overlap", OVERLAP_POLICIES), ("misfire", MISFIRE_POLICIES)):
        if key in given:
            if given[key] not in allowed:
                raise ScheduleError(f"{key} must be one of {', '.join(allowed)}")
            cols[key] = given[key]
    if "misfire_grace_s" in given:
        cols["misfire_grace_s"] = slots.parse_every(given["misfire_grace_s"])
    cols.setdefault("args", [])
    cols.setdefault("kwargs", {})
    slots.validate(timing_of(cols))
    return cols


def create(name: str, values: Mapping[str, Any], *, source: str = "user",
           enabled: bool = True) -> Schedule:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ScheduleError("a schedule name of 1 to 200 characters is required")
    if db.session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise ScheduleError(f"a schedule named {name!r} already exists")
    schedule = Schedule(name=name, source=source, enabled=enabled, **definition(values))
    db.session.add(schedule)
    db.session.commit()
    return schedule


def update(schedule: Schedule, values: Mapping[str, Any]) -> Schedule:
    for key, value in definition(values, schedule).items():
        setattr(schedule, key, value)
    _replan(schedule)
    db.session.commit()
    return schedule


def set_enabled(schedule: Schedule, enabled: bool) -> Schedule:
    schedule.enabled = enabled
    _replan(schedule)
    db.session.commit()
    return schedule


def remove(schedule: Schedule) -> None:
    db.session.delete(schedule)
    db.session.commit()


def run_now(schedule: Schedule) -> str:
    """Fire the schedule's task now, outside its slots (trigger `manual`)."""
    return enqueue(schedule.task, schedule.args or [], schedule.kwargs or {}, trigger="manual",
                   queue=schedule.queue, schedule_id=schedule.id)


def get(name: str) -> Schedule:
    schedule = db.session.scalar(select(Schedule).where(Schedule.name == name))
    if schedule is None:
        raise ScheduleError(f"no schedule named {name!r}")
    return schedule


def sync_code(entries: Iterable[Mapping[str, Any]]) -> None:
    """Make the `code` schedules match beat_schedule.py, by name.

    Code owns each definition; whether one is enabled is the operator's and survives
    restarts (it is only set when the schedule is first created). Code schedules that are
    no longer in the code are removed. A changed definition is planned afresh.
    """
    # Beats starting together would both insert a new code schedule; one waits for the other.
    db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SYNC_LOCK_KEY})
    names = set()
    for entry in entries:
        entry = dict(entry)
        name = entry.pop("name")
        enabled = bool(entry.pop("enabled", True))
        names.add(name)
        cols = definition(entry)
        schedule = db.session.scalar(select(Schedule).where(Schedule.name == name))
        if schedule is None:
            db.session.add(Schedule(name=name, source="code", enabled=enabled, **cols))
            continue
        changed = any(getattr(schedule, k) != v for k, v in cols.items())
        for key, value in cols.items():
            setattr(schedule, key, value)
        schedule.source = "code"
        if changed:
            _replan(schedule)
    db.session.execute(
        delete(Schedule).where(Schedule.source == "code", Schedule.name.not_in(names))
    )
    db.session.commit()


def _replan(schedule: Schedule) -> None:
    schedule.next_fire_at = None
    schedule.updated_at = utcnow()

