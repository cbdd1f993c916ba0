"""Failure alerts: an e-mail to ALERT_EMAILS when a run fails for the last time.

At most one alert per task per ALERT_QUIET_S (15 minutes): a failure inside the quiet period
is appended to a digest e-mail scheduled for the end of the period, which then counts as the
next alert. The digest is an ordinary outbox e-mail, so it is durable and cancellable.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import text

from models import Email, FailureAlert, db
from scheduler.mail.outbox import send_email

logger = logging.getLogger(__name__)


def notify_failure(run_id: int, task_id: str, task_name: str, error: str) -> None:
    """Alert about a final failure, or fold it into the pending digest; never raises."""
    recipients = current_app.config["ALERT_EMAILS"]
    if not recipients:
        return
    try:
        _notify(recipients, run_id, task_id, task_name, error)
    except Exception:
        db.session.rollback()
        logger.exception("could not record the failure alert for %s", task_name)


def _notify(recipients: list[str], run_id: int, task_id: str, task_name: str,
            error: str) -> None:
    cfg = current_app.config
    now = datetime.now(timezone.utc)
    quiet = timedelta(seconds=cfg["ALERT_QUIET_S"])
    line = (f"- {now:%Y-%m-%d %H:%M:%S} UTC, run {task_id}: {error}\n"
            f"  {cfg['BASE_URL'].rstrip('/')}/status/{task_id}\n")
    # One row per task, locked, so concurrent failures agree on who sends.
    db.session.execute(text(
        "INSERT INTO failure_alerts (task_name, last_alert_at, folded) "
        "VALUES (:task, 'epoch', 0) ON CONFLICT (task_name) DO NOTHING"
    ), {"task": task_name})
    state = db.session.get(FailureAlert, task_name, with_for_update=True,
                           populate_existing=True)
    if now - state.last_alert_at >= quiet:
        send_email(recipients, f"[Beatkeeper] {task_name} failed",
                   f"The task {task_name} failed for the last time.\n\n{line}",
                   idempotency_key=f"alert:{run_id}")
        state.last_alert_at, state.digest_email_id, state.folded = now, None, 0
    else:
        digest = db.session.get(Email, state.digest_email_id) if state.digest_email_id else None
        if digest is not None and digest.state == "scheduled":
            db.session.refresh(digest, with_for_update=True)
        if digest is not None and digest.state == "scheduled":
            state.folded += 1
            digest.text_body += line
            digest.subject = f"[Beatkeeper] {task_name} failed {state.folded} more times"
        else:
            send_at = state.last_alert_at + quiet
            digest = send_email(recipients, f"[Beatkeeper] {task_name} failed again",
                                f"More failures of {task_name} since the last alert:\n\n{line}",
                                send_at=send_at,
                                idempotency_key=f"alert-digest:{task_name}:{send_at.isoformat()}")
            state.last_alert_at, state.digest_email_id, state.folded = send_at, digest.id, 1
    db.session.commit()
