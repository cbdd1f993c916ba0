"""API: workers and queues (read-only), through scheduler.stats."""
from __future__ import annotations

from typing import Any

from flask import current_app

from app.api import ApiError, bp
from app.api.schemas import QueueListSchema, WorkerListSchema
from scheduler import broker


def _unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "broker_unavailable",
                    f"the task queue is not reachable: {type(exc).__name__}: {exc}")


def _tasks(items: list[dict]) -> list[dict[str, Any]]:
    # inspect().scheduled() wraps each task in {"eta": ..., "request": {...}}
    return [{"id": (t.get("request") or t).get("id"), "name": (t.get("request") or t).get("name")}
            for t in items if isinstance(t, dict)]


@bp.route("/workers", methods=["GET"], tags=["system"])
@bp.response(200, WorkerListSchema)
def list_workers():
    """The Celery workers that answer within about a second, with what they run and hold."""
    try:
        found = broker.workers(current_app.extensions["celery"])
    except broker.BROKER_ERRORS as exc:
        raise _unavailable(exc) from None
    return {"workers": [{"node": w.node, "pid": w.pid, "concurrency": w.concurrency,
                         "uptime_s": w.uptime_s, "active": _tasks(w.active),
                         "reserved": _tasks(w.reserved), "scheduled": _tasks(w.scheduled)}
                        for w in found]}


@bp.route("/queues", methods=["GET"], tags=["system"])
@bp.response(200, QueueListSchema)
def list_queues():
    """The known queues and the messages waiting in each (Redis)."""
    celery_app = current_app.extensions["celery"]
    names = broker.queue_names(celery_app)
    try:
        depths = broker.queue_depths(celery_app, names)
    except broker.BROKER_ERRORS as exc:
        raise _unavailable(exc) from None
    return {"queues": [{"name": n, "depth": depths.get(n, 0)} for n in names]}
