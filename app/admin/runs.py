"""Admin pages: the runs list (filters, key paging, bulk actions) and a run (every field, the
timeline of its attempts, live progress, and the operator's actions)."""
from __future__ import annotations

import json
from typing import Any, Callable

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from app.admin import bp
from app.admin.display import when
from app.auth import role_required
from models import JobRun, RunState
from scheduler.history import actions, queries
from scheduler.enqueue import BrokerUnavailable

#: The publishers a run can have (the trigger filter's choices).
TRIGGERS = ("web", "api", "cli", "beat", "manual", "rerun", "retry", "external")
#: The states each action applies in (the run page shows and hides its buttons by them).
ACTION_STATES = {"rerun": actions.RERUNNABLE, "retry": actions.RETRYABLE,
                 "cancel": actions.CANCELLABLE, "stop": actions.STOPPABLE}
BROKER_DOWN = "the task queue (Redis) is not reachable; try again shortly"


@bp.get("/runs")
def runs() -> str:
    try:
        filters = queries.RunFilters.from_args(request.args)
    except ValueError as exc:
        abort(400, description=f"Bad filter: {exc}.")
    limit = request.args.get("limit", queries.PAGE_SIZE, type=int)
    page = queries.list_runs(filters, before=request.args.get("before", type=int),
                             after=request.args.get("after", type=int), limit=limit)
    # The pager's links keep the filter and the page size.
    paging = {**filters.to_args(), **({"limit": limit} if limit != queries.PAGE_SIZE else {})}
    count = queries.count_runs(filters)
    tasks = sorted(n for n in current_app.extensions["celery"].tasks
                   if not n.startswith("celery."))
    return render_template(
        "admin/runs.html", page=page, filters=filters, args=filters.to_args(), paging=paging,
        count=count,
        bulk_words=_bulk_words(count), states=[s.value for s in RunState], triggers=TRIGGERS,
        tasks=tasks, when=when, window=queries.SEARCH_WINDOW,
        can_act=current_user.can("operator"))


def _bulk_words(count: queries.Count) -> dict[str, str]:
    """Per bulk action, which runs "... all N matching" touches: for its button and its
    confirmation."""
    words = {}
    for action in actions.ACTIONS:
        limit = actions.bulk_limit(action)
        if count.kind == "exact" and count.value <= limit:
            words[action] = f"all {count}"
        else:
            words[action] = f"the newest {min(count.value, limit):,} of {count}"
    return words


@bp.get("/runs/<int:run_id>")
def run(run_id: int) -> str:
    item = _run_or_404(run_id)
    return render_template("admin/run.html", run=item, links=queries.run_links(item),
                           progress=queries.progress(item), fields=_fields(item),
                           documents=_documents(item), can=_allowed(item),
                           action_states={a: " ".join(s.value for s in states)
                                          for a, states in ACTION_STATES.items()},
                           when=when)


@bp.get("/runs/<int:run_id>/progress")
def run_progress(run_id: int) -> Response:
    """The live part of the run page, polled by admin-run.js."""
    return jsonify(queries.progress(_run_or_404(run_id)))


def _run_or_404(run_id: int) -> JobRun:
    item = queries.get_run(run_id)
    if item is None:
        abort(404, description=f"There is no run {run_id}.")
    return item


def _fields(item: JobRun) -> list[tuple[str, Any]]:
    """The run's plain fields in reading order, (label, text); empty ones left out."""
    times = [("Created", item.created_at), ("Scheduled", item.scheduled_at),
             ("Due", item.eta), ("Slot", item.scheduled_for), ("Queued", item.queued_at),
             ("Started", item.started_at), ("Retrying", item.retrying_at),
             ("Succeeded", item.succeeded_at), ("Failed", item.failed_at),
             ("Revoked", item.revoked_at), ("Lost", item.lost_at),
             ("Skipped", item.skipped_at), ("Progress at", item.progress_at),
             ("Updated", item.updated_at)]
    worker = f"{item.worker_host} (pid {item.worker_pid})" if item.worker_host else None
    fields = [("Task id", item.task_id), ("Task", item.task_name), ("Trigger", item.trigger),
              ("Queue", item.queue), ("Attempts", item.attempts), ("Worker", worker),
              ("Error type", item.error_type), ("Error", item.error_message),
              ("Skip reason", item.skip_reason)]
    return [(label, value) for label, value in fields if value not in (None, "")] \
        + [(label, when(t)) for label, t in times if t is not None]


def _documents(item: JobRun) -> list[tuple[str, str]]:
    """Arguments and result laid out as JSON, and the traceback: (title, text), escaped by
    the template like any text."""
    docs = [("Args", item.args), ("Kwargs", item.kwargs), ("Result", item.result)]
    shown = [(title, json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))
             for title, value in docs if value is not None]
    if item.traceback:
        shown.append(("Traceback", item.traceback))
    return shown


def _allowed(item: JobRun) -> dict[str, bool]:
    """The actions that apply in the run's state, for an operator; none for a viewer."""
    operator = current_user.can("operator")
    return {action: operator and RunState(item.state) in states
            for action, states in ACTION_STATES.items()}


@bp.post("/runs/<int:run_id>/rerun")
@role_required("operator")
def run_rerun(run_id: int) -> Response:
    """A new run of the same task and arguments, linked to this one."""
    return _act(run_id, actions.rerun)


@bp.post("/runs/<int:run_id>/retry")
@role_required("operator")
def run_retry(run_id: int) -> Response:
    """A failed or lost run once more, as a new linked run (once per run)."""
    return _act(run_id, actions.retry)


@bp.post("/runs/<int:run_id>/cancel")
@role_required("operator")
def run_cancel(run_id: int) -> Response:
    return _act(run_id, actions.cancel)


@bp.post("/runs/<int:run_id>/stop")
@role_required("operator")
def run_stop(run_id: int) -> Response:
    return _act(run_id, actions.stop)


def _act(run_id: int, action: Callable[..., actions.ActionResult]) -> Response:
    try:
        result = action(_run_or_404(run_id), by=current_user.email)
    except actions.RunActionError as exc:
        flash(f"Not done: {exc}.", "error")
    except BrokerUnavailable:
        flash(f"Not done: {BROKER_DOWN}.", "error")
    else:
        flash(result.message, "info")
    return redirect(url_for("admin.run", run_id=run_id))


@bp.post("/runs/bulk")
@role_required("operator")
def runs_bulk() -> Response:
    """An action on the ticked runs (`ids`), or with `scope=filter` on the runs matching
    the filter fields sent along (as many as scheduler.runs.bulk_limit allows)."""
    try:
        filters = queries.RunFilters.from_args(request.form)
    except ValueError as exc:
        flash(f"Not done: bad filter: {exc}.", "error")
        return redirect(url_for("admin.runs"))
    action = request.form.get("action", "")
    try:
        if request.form.get("scope") == "filter":
            result = actions.bulk(action, filters=filters, by=current_user.email)
        else:
            ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()]
            result = actions.bulk(action, ids=ids, by=current_user.email)
    except actions.RunActionError as exc:
        flash(f"Not done: {exc}.", "error")
    except BrokerUnavailable:
        flash(f"Not done: {BROKER_DOWN}.", "error")
    else:
        flash(result.message, "info" if result.done else "error")
    return redirect(url_for("admin.runs", **filters.to_args()))
