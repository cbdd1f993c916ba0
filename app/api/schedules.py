"""API: schedules, through scheduler.schedules (the CLI's and the admin pages' code)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.api import ApiError, bp
from app.api.fields import attributes
from app.api.schemas import (ScheduleCreateSchema, ScheduleInputSchema, ScheduleListSchema,
                             ScheduleSchema, StartedSchema)
from models import JobRun, Schedule, db
from scheduler.beat import schedules
from scheduler.enqueue import BrokerUnavailable, UnknownTask
from scheduler.beat.slots import ScheduleError

ID = "<int(max=2147483647):schedule_id>"
#: What a definition may raise besides ScheduleError on odd input (time zones, numbers).
_BAD_INPUT = (ScheduleError, ValueError, TypeError, OverflowError, LookupError)


def _dump(schedule: Schedule) -> dict[str, Any]:
    data = attributes(schedule, ScheduleSchema)
    data["description"] = schedules.describe(schedule)
    return data


def _get(schedule_id: int) -> Schedule:
    schedule = db.session.get(Schedule, schedule_id)
    if schedule is None:
        raise ApiError(404, "not_found", f"no schedule {schedule_id}")
    return schedule


def _refuse_code(schedule: Schedule) -> None:
    if schedule.source == "code":
        raise ApiError(409, "code_schedule", f"schedule {schedule.name} is defined in "
                       "beat_schedule.py: change it there (enable/disable is allowed)")


def _invalid(exc: Exception) -> ApiError:
    db.session.rollback()
    message = str(exc) or "invalid schedule"
    code = "unknown_task" if message.startswith("unknown task") else "invalid_schedule"
    return ApiError(422, code, message)


@bp.route("/schedules", methods=["GET"], tags=["schedules"])
@bp.response(200, ScheduleListSchema)
def list_schedules():
    """All schedules, by name."""
    rows = db.session.scalars(select(Schedule).order_by(Schedule.name))
    return {"schedules": [_dump(s) for s in rows]}


@bp.route("/schedules", methods=["POST"], tags=["schedules"])
@bp.arguments(ScheduleCreateSchema)
@bp.response(201, ScheduleSchema)
def create_schedule(body: dict[str, Any]):
    """Create a schedule: a task and one of `every`, `cron` (with `tz`) or `at`."""
    name, enabled = body.pop("name").strip(), body.pop("enabled")
    if db.session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise ApiError(409, "conflict", f"a schedule named {name!r} already exists")
    try:
        schedule = schedules.create(name, body, enabled=enabled)
    except _BAD_INPUT as exc:
        raise _invalid(exc) from None
    return _dump(schedule)


@bp.route(f"/schedules/{ID}", methods=["GET"], tags=["schedules"])
@bp.response(200, ScheduleSchema)
def get_schedule(schedule_id: int):
    """One schedule."""
    return _dump(_get(schedule_id))


@bp.route(f"/schedules/{ID}", methods=["PATCH"], tags=["schedules"])
@bp.arguments(ScheduleInputSchema)
@bp.response(200, ScheduleSchema)
def edit_schedule(body: dict[str, Any], schedule_id: int):
    """Change the given fields of a schedule (not of one defined in code); it is planned
    afresh from now."""
    schedule = _get(schedule_id)
    _refuse_code(schedule)
    try:
        schedules.update(schedule, body)
    except _BAD_INPUT as exc:
        raise _invalid(exc) from None
    return _dump(schedule)


@bp.route(f"/schedules/{ID}", methods=["DELETE"], tags=["schedules"])
@bp.response(204)
def delete_schedule(schedule_id: int):
    """Delete a schedule (not one defined in code); its runs stay."""
    schedule = _get(schedule_id)
    _refuse_code(schedule)
    schedules.remove(schedule)
    return ""


def _toggle(enabled: bool):
    def view(schedule_id: int):
        return _dump(schedules.set_enabled(_get(schedule_id), enabled))

    word = "enable" if enabled else "disable"
    view.__name__ = f"{word}_schedule"
    view.__doc__ = f"{word.capitalize()} a schedule (code schedules too)."
    bp.route(f"/schedules/{ID}/{word}", methods=["POST"], tags=["schedules"])(
        bp.response(200, ScheduleSchema)(view))


_toggle(True)
_toggle(False)


@bp.route(f"/schedules/{ID}/run", methods=["POST"], tags=["schedules"])
@bp.response(202, StartedSchema)
def run_schedule(schedule_id: int):
    """Run the schedule's task now, outside its slots (trigger `manual`)."""
    schedule = _get(schedule_id)
    try:
        task_id = schedules.run_now(schedule)
    except UnknownTask:
        raise ApiError(409, "unknown_task",
                       f"task {schedule.task} is not registered here") from None
    except TypeError as exc:  # Celery checks the arguments against the task's signature
        raise ApiError(409, "bad_arguments", f"the schedule's arguments do not fit task "
                       f"{schedule.task}: {exc}") from None
    except BrokerUnavailable as exc:
        raise ApiError(503, "broker_unavailable",
                       f"the task queue is not reachable: {exc}") from None
    return {"task_id": task_id,
            "run_id": db.session.scalar(select(JobRun.id).where(JobRun.task_id == task_id))}
