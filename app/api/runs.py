"""API: runs. The list and the actions are scheduler.history's (the runs page's code)."""
from __future__ import annotations

from typing import Any, Callable

from celery.utils import uuid
from flask import g
from sqlalchemy import select

from app.api import ApiError, bp
from app.api.fields import attributes
from app.api.schemas import (MessageSchema, RunListArgs, RunPageSchema, RunSchema,
                             StartRunSchema)
from models import JobRun, db
from scheduler.history import actions, queries
from scheduler.enqueue import BrokerUnavailable, UnknownTask, enqueue

#: The trigger recorded on runs the API starts.
TRIGGER = "api"


def _run_or_404(run_id: int) -> JobRun:
    run = queries.get_run(run_id)
    if run is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    return run


def _dump(run: JobRun) -> dict[str, Any]:
    data = attributes(run, RunSchema)
    data["progress"] = queries.progress(run)
    return data


@bp.route("/runs", methods=["GET"], tags=["runs"])
@bp.arguments(RunListArgs, location="query", as_kwargs=True)
@bp.response(200, RunPageSchema)
def list_runs(**args: Any):
    """Runs, newest first, filtered as on the runs page; paged by key (`before`/`after`)."""
    # Built from the arguments as the schema validated them (times in UTC: PostgreSQL refuses
    # offsets beyond 15:59).
    filters = queries.RunFilters.make(
        states=args.get("state"), task=args.get("task"), trigger=args.get("trigger"),
        schedule_id=args.get("schedule"), created_from=args.get("from_"),
        created_to=args.get("to"), q=args.get("q"))
    page = queries.list_runs(filters, before=args.get("before"), after=args.get("after"),
                             limit=args.get("limit", queries.PAGE_SIZE))
    return {"runs": page.runs, "newer": page.newer, "older": page.older,
            "searched_to": page.searched_to}


@bp.route("/runs", methods=["POST"], tags=["runs"])
@bp.arguments(StartRunSchema)
@bp.response(202, RunSchema)
def start_run(body: dict[str, Any]):
    """Start a registered task by name, now or later (`countdown` seconds, or `eta`).

    `args` and `kwargs` must fit the task's signature (422 `bad_arguments` otherwise)."""
    if body.get("countdown") is not None and body.get("eta") is not None:
        raise ApiError(422, "validation_error", "give countdown or eta, not both")
    task_id = uuid()
    try:
        enqueue(body["task"], body["args"], body["kwargs"], trigger=TRIGGER,
                countdown=body.get("countdown"), eta=body.get("eta"), task_id=task_id)
    except UnknownTask:
        raise ApiError(422, "unknown_task", f"no registered task {body['task']!r}") from None
    except TypeError as exc:  # Celery checks the arguments against the task's signature
        raise ApiError(422, "bad_arguments",
                       f"the arguments do not fit task {body['task']}: {exc}") from None
    except BrokerUnavailable as exc:
        run_id = db.session.scalar(select(JobRun.id).where(JobRun.task_id == task_id))
        raise ApiError(503, "broker_unavailable", f"the task queue is not reachable: {exc}",
                       run_id=run_id) from None
    db.session.expire_all()
    run = db.session.scalar(select(JobRun).where(JobRun.task_id == task_id))
    return _dump(_run_or_404(run.id))


@bp.route("/runs/<int(max=9223372036854775807):run_id>", methods=["GET"], tags=["runs"])
@bp.response(200, RunSchema)
def get_run(run_id: int):
    """One run with its progress and the events of every attempt."""
    return _dump(_run_or_404(run_id))


def _action(name: str, act: Callable[..., actions.ActionResult], doc: str) -> None:
    def view(run_id: int):
        run = _run_or_404(run_id)
        try:
            result = act(run, by=f"api:{g.api_user.email}")
        except actions.RunActionError as exc:
            raise ApiError(409, "wrong_state", str(exc)) from None
        except BrokerUnavailable as exc:
            raise ApiError(503, "broker_unavailable",
                           f"the task queue is not reachable: {exc}") from None
        return {"message": result.message, "run_id": result.run_id}

    view.__name__ = f"{name}_run"
    view.__doc__ = doc
    view = bp.response(200, MessageSchema)(view)
    bp.route(f"/runs/<int(max=9223372036854775807):run_id>/{name}", methods=["POST"],
             tags=["runs"])(view)


_action("cancel", actions.cancel,
        "Cancel a scheduled, queued or retrying run.\n\nAnswers 409 in other states.")
_action("rerun", actions.rerun,
        "Start a finished run again as a new run (`run_id` in the answer).\n\n"
        "Answers 409 for a run not finished.")
_action("retry", actions.retry,
        "Retry a failed or lost run once, as a new run (`run_id` in the answer).")
_action("stop", actions.stop, "Stop a running run (its worker process gets SIGTERM).")
