"""Admin page: workers and queues (read-only): Celery workers, Redis queue depths, beats."""
from __future__ import annotations

from flask import current_app, render_template

from app.admin import bp
from scheduler import stats


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@bp.get("/system")
def system() -> str:
    """Bounded to about BROKER_TIMEOUT_S (Redis check, then one waiting broadcast)."""
    celery_app = current_app.extensions["celery"]
    names = stats.queue_names(celery_app)
    depths, broker_error, workers, workers_error = {}, None, [], None
    try:
        depths = stats.queue_depths(celery_app, names)
    except stats.BROKER_ERRORS as exc:
        broker_error = _reason(exc)
    if broker_error is None:
        # Only ask the workers when Redis answers: against a dead broker the broadcast
        # retries its connection for seconds before it gives up.
        try:
            workers = stats.workers(celery_app)
        except stats.BROKER_ERRORS as exc:
            workers_error = _reason(exc)
    found_beats = stats.beats()
    return render_template(
        "admin/system.html",
        queues=names, depths=depths, broker_error=broker_error,
        workers=workers, workers_error=workers_error,
        beats=found_beats, leader=stats.beat_leader(found_beats), stale_s=stats.BEAT_STALE_S,
        pending=stats.pending_counts(), timeout_s=stats.BROKER_TIMEOUT_S,
    )
