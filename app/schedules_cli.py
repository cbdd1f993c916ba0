"""`flask --app app schedules list|add|edit|enable|disable|remove|run`."""
from __future__ import annotations

from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app.cli_output import echo_rows
from models import Schedule, db
from scheduler.beat import schedules
from scheduler.enqueue import BrokerUnavailable
from scheduler.beat.slots import ScheduleError

group = AppGroup("schedules", help="List and change the schedules beat fires.")


def _timing_options(fn):
    options = [
        click.option("--task", help="Registered task name, e.g. demo.noop."),
        click.option("--every", help="Interval: 10s, 5m, 2h, 1d."),
        click.option("--cron", help='Five-field cron expression, e.g. "*/5 * * * *".'),
        click.option("--tz", help="IANA time zone of --cron, --at, --start, --end (default UTC)."),
        click.option("--at", "at", help="One run at this moment, e.g. 2026-12-24T18:00+01:00."),
        click.option("--args", help="Positional arguments as a JSON array."),
        click.option("--kwargs", help="Keyword arguments as a JSON object."),
        click.option("--queue", help="Queue to publish to."),
        click.option("--start", "start_at", help="No fire before this time."),
        click.option("--end", "end_at", help="No fire after this time."),
        click.option("--overlap", type=click.Choice(["allow", "skip"]),
                     help="While the previous run is unfinished: fire anyway, or skip."),
        click.option("--misfire", type=click.Choice(["run_once", "skip"]),
                     help="After downtime: one catch-up run, or none."),
        click.option("--grace", "misfire_grace_s", help="How late a fire still counts as on time."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _json_values(values: dict[str, Any]) -> dict[str, Any]:
    """--args and --kwargs read as the API reads them: any JSON values, null included."""
    from app.api.fields import parse_json_arguments

    for key, kind in (("args", list), ("kwargs", dict)):
        if values.get(key) is not None:
            try:
                values[key] = parse_json_arguments(values[key], kind, f"--{key}")
            except ValueError as exc:
                raise _fail(exc) from None
    return values


def _row(s: Schedule) -> dict[str, Any]:
    upcoming = schedules.next_fire_times(s, 1) if s.enabled else []
    return {
        "name": s.name, "task": s.task, "timing": schedules.describe(s), "enabled": s.enabled,
        "next": upcoming[0].isoformat() if upcoming else None,
        "last_run": s.last_run_at.isoformat() if s.last_run_at else None,
        "runs": s.total_run_count, "source": s.source, "args": s.args, "kwargs": s.kwargs,
        "overlap": s.overlap, "misfire": s.misfire,
    }


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """List every schedule."""
    rows = [_row(s) for s in db.session.scalars(select(Schedule).order_by(Schedule.name))]
    echo_rows(rows, ("name", "task", "timing", "enabled", "next", "last_run", "runs", "source"),
              as_json)


@group.command("add")
@click.argument("name")
@_timing_options
@click.option("--disabled", is_flag=True, help="Create it disabled.")
def add_command(name: str, disabled: bool, **values: Any) -> None:
    """Add a schedule."""
    try:
        schedule = schedules.create(name, _json_values(values), enabled=not disabled)
    except ScheduleError as exc:
        raise _fail(exc)
    click.echo(f"added {schedule.name}: {schedules.describe(schedule)}")


@group.command("edit")
@click.argument("name")
@_timing_options
def edit_command(name: str, **values: Any) -> None:
    """Change a schedule; the next fire is planned from now."""
    try:
        schedule = schedules.update(schedules.get(name), _json_values(values))
    except ScheduleError as exc:
        db.session.rollback()
        raise _fail(exc)
    click.echo(f"changed {schedule.name}: {schedules.describe(schedule)}")


def _name_command(command: str, summary: str, action, done: str) -> None:
    """A command that takes a schedule NAME and applies `action` to it."""

    @group.command(command, help=summary)
    @click.argument("name")
    def run(name: str) -> None:
        try:
            action(schedules.get(name))
        except ScheduleError as exc:
            raise _fail(exc)
        click.echo(f"{done} {name}")


_name_command("enable", "Enable a schedule.",
              lambda s: schedules.set_enabled(s, True), "enabled")
_name_command("disable", "Disable a schedule.",
              lambda s: schedules.set_enabled(s, False), "disabled")
_name_command("remove", "Remove a schedule (its runs stay in the history).",
              schedules.remove, "removed")


@group.command("run")
@click.argument("name")
def run_command(name: str) -> None:
    """Fire a schedule's task now (trigger `manual`)."""
    try:
        task_id = schedules.run_now(schedules.get(name))
    except (ScheduleError, BrokerUnavailable) as exc:
        raise _fail(exc)
    click.echo(task_id)


def init_app(app: Flask) -> None:
    app.cli.add_command(group)
