"""Admin pages: schedules in plain words with their next fires and runs, the form with a live
preview of the fire times, and the operator's actions (enable/disable, run now, delete)."""
from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Mapping

from flask import Response, current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select, true
from sqlalchemy.exc import IntegrityError

from app import charts
from app.admin.display import when
from app.admin import bp
from app.auth import role_required
from models import JobRun, Schedule, db
from models.schedule import MISFIRE_POLICIES, OVERLAP_POLICIES
from scheduler.beat import schedules, slots
from scheduler.enqueue import BrokerUnavailable, UnknownTask
from scheduler.beat.slots import ScheduleError

#: Fire times shown for a schedule (list, detail, preview).
NEXT_COUNT = 5
#: Runs in a schedule's history, and succeeded runs in its duration chart.
HISTORY_ROWS = 50
#: Skipped runs listed with their reason on a schedule's page.
SKIPPED_ROWS = 20
#: The form's timing field for each kind, named as scheduler.schedules.definition names it.
TIMING_FIELD = {"interval": "every", "crontab": "cron", "clocked": "at"}
#: The query parameters of the preview: a timing alone, no task.
PREVIEW_KEYS = ("every", "cron", "tz", "at", "start_at", "end_at")
#: An empty definition: validated as an edit of it, definition() checks the timing alone, by
#: the very rules of create and update, and writes nothing.
_BLANK = SimpleNamespace(**dict.fromkeys(schedules.DEFINITION_FIELDS))
_FORM_FIELDS = ("name", "task", "kind", "every", "cron", "tz", "at", "args", "kwargs", "queue",
                "start_at", "end_at", "overlap", "misfire", "grace")


def _plan(schedule: Schedule | Mapping[str, Any]) -> tuple[str, list[datetime], str | None]:
    """(plain words, next fire times, error): a stored definition that no longer validates
    (its time zone gone from the system) shows why instead of breaking the page."""
    try:
        return (schedules.describe(schedule), schedules.next_fire_times(schedule, NEXT_COUNT),
                None)
    except ScheduleError as exc:
        return "", [], str(exc)


def _duration_s(run: JobRun) -> float | None:
    end = run.succeeded_at or run.failed_at or run.revoked_at or run.lost_at
    return (end - run.started_at).total_seconds() if end and run.started_at else None


def _task_names(current: str | None = None) -> list[str]:
    names = {t for t in current_app.extensions["celery"].tasks if not t.startswith("celery.")}
    if current:  # a task no longer registered still shows (and is refused) as it is
        names.add(current)
    return sorted(names)


def _get_schedule(schedule_id: int) -> Schedule:
    return db.get_or_404(Schedule, schedule_id)


def _back(schedule: Schedule) -> Response:
    """Back to the page the action came from: the schedule's own page or the list."""
    if request.form.get("back") == "detail":
        return redirect(url_for("admin.schedule", schedule_id=schedule.id))
    return redirect(url_for("admin.schedules"))


# --- pages -----------------------------------------------------------------------------------

@bp.get("/schedules", endpoint="schedules")
def schedule_list() -> str:
    # The latest run of each schedule in the same query (a LATERAL join on the
    # (schedule_id, id) index), not one query per row.
    latest = (
        select(JobRun.id.label("run_id"), JobRun.state.label("run_state"),
               func.coalesce(JobRun.started_at, JobRun.scheduled_for,
                             JobRun.created_at).label("run_at"))
        .where(JobRun.schedule_id == Schedule.id)
        .order_by(JobRun.id.desc()).limit(1)
        .lateral("latest")
    )
    rows = db.session.execute(
        select(Schedule, latest.c.run_id, latest.c.run_state, latest.c.run_at)
        .outerjoin(latest, true()).order_by(Schedule.name)
    ).all()
    items = []
    for schedule, run_id, run_state, run_at in rows:
        words, upcoming, error = _plan(schedule)
        items.append({"s": schedule, "words": words, "next": upcoming, "error": error,
                      "run_id": run_id, "run_state": run_state, "run_at": run_at})
    return render_template("admin/schedules.html", items=items, when=when)


@bp.get("/schedules/<int:schedule_id>", endpoint="schedule")
def schedule_detail(schedule_id: int) -> str:
    schedule = _get_schedule(schedule_id)
    words, upcoming, error = _plan(schedule)
    of_schedule = select(JobRun).where(JobRun.schedule_id == schedule.id)
    history = db.session.scalars(of_schedule.order_by(JobRun.id.desc()).limit(HISTORY_ROWS)).all()
    skipped = db.session.scalars(of_schedule.where(JobRun.state == "skipped")
                                 .order_by(JobRun.id.desc()).limit(SKIPPED_ROWS)).all()
    succeeded = db.session.scalars(of_schedule.where(JobRun.state == "succeeded")
                                   .order_by(JobRun.id.desc()).limit(HISTORY_ROWS)).all()
    durations = [_duration_s(r) for r in reversed(succeeded)]
    chart = charts.line(durations, unit="s",
                        title=f"Durations of the last {len(durations)} succeeded runs") \
        if any(d is not None for d in durations) else None
    return render_template(
        "admin/schedule.html", s=schedule, words=words, next=upcoming, error=error,
        history=[(r, _duration_s(r)) for r in history], skipped=skipped, chart=chart,
        when=when, as_json=json.dumps, format_every=slots.format_every,
    )


# --- the form --------------------------------------------------------------------------------

def _blank_form() -> dict[str, Any]:
    return {"name": "", "task": "", "kind": "interval", "every": "", "cron": "", "tz": "UTC",
            "at": "", "args": "[]", "kwargs": "{}", "queue": "", "start_at": "", "end_at": "",
            "overlap": "allow", "misfire": "run_once", "grace": "60s", "enabled": True}


def _local_iso(dt: datetime | None, tz: str) -> str:
    if dt is None:
        return ""
    try:
        return dt.astimezone(slots.zone(tz)).isoformat()
    except ScheduleError:
        return dt.isoformat()


def _form_of(s: Schedule) -> dict[str, Any]:
    return {"name": s.name, "task": s.task, "kind": s.kind,
            "every": slots.format_every(s.every_s) if s.every_s else "", "cron": s.cron or "",
            "tz": s.timezone, "at": _local_iso(s.clocked_at, s.timezone),
            "args": json.dumps(s.args), "kwargs": json.dumps(s.kwargs), "queue": s.queue or "",
            "start_at": _local_iso(s.start_at, s.timezone),
            "end_at": _local_iso(s.end_at, s.timezone), "overlap": s.overlap,
            "misfire": s.misfire, "grace": slots.format_every(s.misfire_grace_s),
            "enabled": s.enabled}


def _form_input() -> dict[str, Any]:
    form = {f: request.form.get(f, "").strip() for f in _FORM_FIELDS}
    form["enabled"] = request.form.get("enabled") == "1"
    return form


def _definition_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """The form's fields as scheduler.schedules.definition takes them (it validates)."""
    key = TIMING_FIELD.get(form["kind"])
    if key is None:
        raise ScheduleError(f"choose a timing: {', '.join(TIMING_FIELD)}")
    values = {"task": form["task"], "tz": form["tz"] or "UTC", key: form[key],
              "args": _json_field(form["args"] or "[]", list, "args"),
              "kwargs": _json_field(form["kwargs"] or "{}", dict, "kwargs"),
              "queue": form["queue"], "start_at": form["start_at"], "end_at": form["end_at"],
              "overlap": form["overlap"], "misfire": form["misfire"]}
    if form["grace"]:
        values["misfire_grace_s"] = form["grace"]
    return values


def _json_field(text: str, kind: type, label: str) -> Any:
    """args/kwargs typed in the form, read as the API reads them: any JSON values, null
    included; what PostgreSQL cannot store (U+0000) or is not JSON (NaN) is refused."""
    from app.api.fields import parse_json_arguments

    try:
        return parse_json_arguments(text, kind, label)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None


def _render_form(form: Mapping[str, Any], schedule: Schedule | None = None,
                 error: str | None = None) -> str:
    return render_template(
        "admin/schedule_form.html", form=form, schedule=schedule, error=error,
        tasks=_task_names(form.get("task")), kinds=TIMING_FIELD, overlaps=OVERLAP_POLICIES,
        misfires=MISFIRE_POLICIES,
    )


def _refuse_code(schedule: Schedule) -> Response:
    flash(f"Schedule {schedule.name} is defined in beat_schedule.py: change it there.", "error")
    return redirect(url_for("admin.schedule", schedule_id=schedule.id))


@bp.route("/schedules/new", methods=["GET", "POST"], endpoint="schedule_new")
@role_required("operator")
def schedule_new():
    if request.method == "GET":
        return _render_form(_blank_form())
    form = _form_input()
    try:
        schedule = schedules.create(form["name"], _definition_values(form),
                                    enabled=form["enabled"])
    except ScheduleError as exc:
        db.session.rollback()
        return _render_form(form, error=str(exc)), 400
    except IntegrityError:  # the same name, created meanwhile
        db.session.rollback()
        return _render_form(form, error=f"a schedule named {form['name']!r} already exists"), 400
    flash(f"Created schedule {schedule.name}: {schedules.describe(schedule)}.", "info")
    return redirect(url_for("admin.schedule", schedule_id=schedule.id))


@bp.route("/schedules/<int:schedule_id>/edit", methods=["GET", "POST"],
          endpoint="schedule_edit")
@role_required("operator")
def schedule_edit(schedule_id: int):
    schedule = _get_schedule(schedule_id)
    if schedule.source == "code":
        return _refuse_code(schedule)
    if request.method == "GET":
        return _render_form(_form_of(schedule), schedule)
    form = _form_input()
    form["name"] = schedule.name  # the name is the schedule's key; it is not edited here
    try:
        schedules.update(schedule, _definition_values(form))
    except ScheduleError as exc:
        db.session.rollback()
        return _render_form(form, schedule, error=str(exc)), 400
    flash(f"Saved schedule {schedule.name}: {schedules.describe(schedule)}; "
          "its next fire is planned from now.", "info")
    return redirect(url_for("admin.schedule", schedule_id=schedule.id))


@bp.get("/schedules/preview", endpoint="schedule_preview")
def schedule_preview() -> Response:
    """The next fire times of a timing being typed: always a 200 JSON answer."""
    given = {k: request.args[k] for k in PREVIEW_KEYS if request.args.get(k, "").strip()}
    try:
        if not any(k in given for k in TIMING_FIELD.values()):
            raise ScheduleError("a timing is required: every (e.g. 10s), cron or at")
        cols = schedules.definition(given, _BLANK)
        words = schedules.describe(cols)
        upcoming = schedules.next_fire_times(cols, NEXT_COUNT)
    except ScheduleError as exc:
        return jsonify(ok=False, error=str(exc))
    except Exception:  # noqa: BLE001 -- a preview answers, whatever was typed
        current_app.logger.exception("schedule preview failed for %r", given)
        return jsonify(ok=False, error="this timing cannot be previewed")
    return jsonify(ok=True, description=words, next=[t.isoformat() for t in upcoming],
                   next_text=[when(t, cols["timezone"]) for t in upcoming])


# --- actions ---------------------------------------------------------------------------------

@bp.post("/schedules/<int:schedule_id>/toggle", endpoint="schedule_toggle")
@role_required("operator")
def schedule_toggle(schedule_id: int) -> Response:
    """Set enabled to the submitted value (not a flip: a second submit changes nothing)."""
    schedule = _get_schedule(schedule_id)
    enabled = request.form.get("enabled") == "1"
    schedules.set_enabled(schedule, enabled)
    flash(f"Schedule {schedule.name} {'enabled' if enabled else 'disabled'}.", "info")
    return _back(schedule)


@bp.post("/schedules/<int:schedule_id>/run", endpoint="schedule_run")
@role_required("operator")
def schedule_run(schedule_id: int) -> Response:
    schedule = _get_schedule(schedule_id)
    try:
        task_id = schedules.run_now(schedule)
    except UnknownTask:
        flash(f"Not started: task {schedule.task} is not registered.", "error")
    except BrokerUnavailable as exc:
        flash(f"Not started: the broker is unavailable ({exc}).", "error")
    else:
        flash(f"Started {schedule.task} for schedule {schedule.name} (task {task_id}).", "info")
    return _back(schedule)


@bp.post("/schedules/<int:schedule_id>/delete", endpoint="schedule_delete")
@role_required("operator")
def schedule_delete(schedule_id: int) -> Response:
    schedule = _get_schedule(schedule_id)
    if schedule.source == "code":
        return _refuse_code(schedule)
    name = schedule.name
    schedules.remove(schedule)
    flash(f"Deleted schedule {name}; its runs stay in the history.", "info")
    return redirect(url_for("admin.schedules"))
