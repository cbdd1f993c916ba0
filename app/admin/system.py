"""Admin page: workers and queues (read-only): Celery workers, Redis queue depths, beats, and
(for admins) the connection settings, credentials masked."""
from __future__ import annotations

from typing import Any

from flask import current_app, render_template
from flask_login import current_user

from app.admin import bp
from app.masking import mask_settings, mask_text
from scheduler import broker
from scheduler.history import processes, stats

#: The settings shown to admins: where the service connects and how it sends mail. Passwords
#: in URLs and secret values are masked (app.masking), never shown.
SHOWN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "MAIL_SERVER", "MAIL_PORT", "MAIL_USE_TLS",
                  "MAIL_USE_SSL", "MAIL_USERNAME", "MAIL_PASSWORD", "MAIL_DEFAULT_SENDER",
                  "SECRET_KEY", "METRICS_TOKEN", "MAX_CONTENT_LENGTH", "RESULT_MAX_BYTES")


def _reason(exc: BaseException) -> str:
    return mask_text(f"{type(exc).__name__}: {exc}")


def _settings() -> dict[str, Any] | None:
    if not current_user.can("admin"):
        return None
    return mask_settings({k: current_app.config.get(k) for k in SHOWN_SETTINGS})


@bp.get("/system")
def system() -> str:
    """Bounded to about BROKER_TIMEOUT_S (Redis check, then one waiting broadcast)."""
    celery_app = current_app.extensions["celery"]
    names = broker.queue_names(celery_app)
    depths, broker_error, workers, workers_error = {}, None, [], None
    try:
        depths = broker.queue_depths(celery_app, names)
    except broker.BROKER_ERRORS as exc:
        broker_error = _reason(exc)
    if broker_error is None:
        # Only ask the workers when Redis answers: against a dead broker the broadcast
        # retries its connection for seconds before it gives up.
        try:
            workers = broker.workers(celery_app)
        except broker.BROKER_ERRORS as exc:
            workers_error = _reason(exc)
    found_beats = processes.beats()
    return render_template(
        "admin/system.html",
        queues=names, depths=depths, broker_error=broker_error,
        workers=workers, workers_error=workers_error,
        beats=found_beats, leader=processes.beat_leader(found_beats), stale_s=processes.BEAT_STALE_S,
        pending=stats.pending_counts(), timeout_s=broker.BROKER_TIMEOUT_S,
        processes=processes.worker_processes(current_app.config["LOST_AFTER_S"]),
        lost_after_s=current_app.config["LOST_AFTER_S"],
        settings=_settings(),
    )
