"""`flask --app app jobs list|show|run|cancel|rerun|sweep|prune|rollup`: runs from the shell.

The actions are those of the admin pages and the API (scheduler.runs); runs started here have
the trigger `cli`.
"""
from __future__ import annotations

import json
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.cli_output import echo_rows
from models import JobRun, RunState, db
from scheduler.history import actions, queries
from scheduler.upkeep import retention
from scheduler.enqueue import BrokerUnavailable, UnknownTask, enqueue

group = AppGroup("jobs", help="List, show, start, cancel, re-run, sweep, prune and roll up runs.")

#: Who acts, in the reasons of cancels.
BY = "cli"
_STATE_CHOICE = click.Choice([s.value for s in RunState])


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _load(run_id: int) -> JobRun:
    run = queries.get_run(run_id)
    if run is None:
        raise click.ClickException(f"no run {run_id}")
    return run


def _json_arg(value: str | None, name: str, kind: type) -> Any:
    """Any JSON array (object) the API takes, null included (app.api.schemas)."""
    from app.api.fields import parse_json_arguments

    if value is None:
        return kind()
    try:
        return parse_json_arguments(value, kind, "the value")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@group.command("list")
@click.option("--state", "states", multiple=True, type=_STATE_CHOICE,
              help="Only runs in this state (repeatable).")
@click.option("--task", help="Only runs of this task, e.g. demo.noop.")
@click.option("--limit", type=click.IntRange(1, queries.MAX_PAGE_SIZE), default=queries.PAGE_SIZE,
              show_default=True, help="Newest runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(states: tuple[str, ...], task: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    page = queries.list_runs(queries.RunFilters(states=tuple(dict.fromkeys(states)), task=task),
                          limit=limit)
    rows = [{k: _iso(v) for k, v in r._mapping.items()} for r in page.runs]
    echo_rows(rows, ("id", "task_name", "state", "trigger", "attempts", "created_at",
                     "ended_at", "error_type"), as_json)


_SHOW_FIELDS = ("id", "task_id", "task_name", "state", "trigger", "queue", "args", "kwargs",
                "attempts", "worker_host", "worker_pid", "eta", "created_at", "started_at",
                "succeeded_at", "failed_at", "revoked_at", "lost_at", "skipped_at",
                "schedule_id", "scheduled_for", "rerun_of_id", "progress_current",
                "progress_total", "progress_message", "result", "error_type", "error_message",
                "skip_reason", "traceback")


@group.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show_command(run_id: int, as_json: bool) -> None:
    """Show one run: its fields and its events (every attempt)."""
    run = _load(run_id)
    fields = {f: _iso(getattr(run, f)) for f in _SHOW_FIELDS}
    events = [{"at": _iso(e.at), "state": e.state, "attempt": e.attempt, "message": e.message}
              for e in run.events]
    if as_json:
        click.echo(json.dumps({**fields, "events": events}, indent=2, default=str))
        return
    shown = [{"field": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v}
             for k, v in fields.items() if v is not None and k != "traceback"]
    echo_rows(shown, ("field", "value"), as_json=False)
    click.echo("")
    echo_rows(events, ("at", "state", "attempt", "message"), as_json=False)
    if run.traceback:
        click.echo("")
        click.echo(run.traceback.rstrip())


@group.command("run")
@click.argument("task")
@click.option("--args", "args_json", help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=click.FloatRange(min=0), help="Start in this many seconds.")
def run_command(task: str, args_json: str | None, kwargs_json: str | None,
                countdown: float | None) -> None:
    """Start a registered task (trigger `cli`); print the new run's id and task id."""
    args = _json_arg(args_json, "--args", list)
    kwargs = _json_arg(kwargs_json, "--kwargs", dict)
    celery_app = current_app.extensions["celery"]
    if task not in celery_app.tasks or task.startswith("celery."):
        known = sorted(n for n in celery_app.tasks if not n.startswith("celery."))
        raise click.ClickException(f"unknown task {task!r}; registered: {', '.join(known)}")
    try:
        task_id = enqueue(task, args, kwargs, trigger="cli", countdown=countdown or None)
    except UnknownTask:
        raise click.ClickException(f"unknown task {task!r}") from None
    except BrokerUnavailable as exc:
        raise click.ClickException(f"the task queue is not reachable: {exc}") from None
    run = db.session.query(JobRun).filter_by(task_id=task_id).one()
    click.echo(f"{run.id} {task_id} {run.state}")


@group.command("cancel")
@click.argument("run_id", type=int)
def cancel_command(run_id: int) -> None:
    """Cancel a run not started yet (scheduled, queued or waiting to retry)."""
    try:
        result = actions.cancel(_load(run_id), by=BY)
    except actions.RunActionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.message)


@group.command("rerun")
@click.argument("run_id", type=int)
def rerun_command(run_id: int) -> None:
    """Start a finished run again as a new run (same task, arguments and queue)."""
    try:
        result = actions.rerun(_load(run_id), by=BY)
    except actions.RunActionError as exc:
        raise click.ClickException(str(exc)) from None
    except BrokerUnavailable as exc:
        raise click.ClickException(f"the task queue is not reachable: {exc}") from None
    click.echo(result.message)


@group.command("sweep")
@click.option("--older-than", "older_than_s", type=float, default=None,
              help="Seconds a worker process must have gone unseen for its running runs to be "
                   "lost (default LOST_AFTER_S; more than twice HEARTBEAT_S).")
@click.option("--requeue-after", "requeue_after_s", type=float, default=None,
              help="Seconds a run must have been queued before its message is looked for "
                   "(default REQUEUE_AFTER_S).")
def sweep_command(older_than_s: float | None, requeue_after_s: float | None) -> None:
    """Mark lost the running runs that no worker runs any more; publish again the queued
    runs whose message is in no queue and on no worker."""
    from scheduler.upkeep.recovery import requeue_lost_messages
    from scheduler.upkeep.sweep import sweep_lost_runs

    config = current_app.config
    if older_than_s is None:
        older_than_s = config["LOST_AFTER_S"]
    if older_than_s <= 2 * config["HEARTBEAT_S"]:
        raise click.BadParameter(
            f"must be more than twice HEARTBEAT_S ({config['HEARTBEAT_S']:g} s): a live "
            "worker process is only seen that often", param_hint="--older-than")
    lost = sweep_lost_runs(current_app.extensions["celery"], older_than_s)
    click.echo(f"marked {len(lost)} run(s) lost" + (f": {', '.join(map(str, lost))}" if lost else ""))
    after_loss_s = config["REQUEUE_AFTER_LOSS_S"]
    if requeue_after_s is None:
        requeue_after_s = config["REQUEUE_AFTER_S"]
    else:
        after_loss_s = min(after_loss_s, requeue_after_s)
    requeued = requeue_lost_messages(current_app.extensions["celery"], requeue_after_s,
                                     after_loss_s)
    click.echo(f"republished {len(requeued)} run(s) whose message was lost"
               + (f": {', '.join(map(str, requeued))}" if requeued else ""))


@group.command("prune")
@click.option("--days", type=click.IntRange(min=1),
              help="Delete finished runs older than this many days "
                   "[default: RUN_RETENTION_DAYS, 30].")
def prune_command(days: int | None) -> None:
    """Write the daily rollups, then delete finished runs older than N days, in batches; keeps
    the last failure of each task and the newest 100 runs of each schedule."""
    if days is None:
        days = int(current_app.config["RUN_RETENTION_DAYS"])
        if days < 1:
            raise click.ClickException("RUN_RETENTION_DAYS must be at least 1")
    db.session.rollback()  # no transaction of ours holds locks during the deletes
    result = retention.prune(days)
    n = result.deleted
    click.echo(f"deleted {n} run{'s' if n != 1 else ''} older than {days} days")
    click.echo(_rollup_line(result.rollups))


@group.command("rollup")
def rollup_command() -> None:
    """Write the daily rollups of complete UTC days (what prune does first), deleting nothing."""
    db.session.rollback()
    click.echo(_rollup_line(retention.roll_up()))


def _rollup_line(rollups: retention.RollupResult) -> str:
    return f"rolled up {rollups.written} day{'s' if rollups.written != 1 else ''}" + (
        f" ({rollups.sealed} sealed)" if rollups.sealed else "")


def init_app(app: Flask) -> None:
    app.cli.add_command(group)
