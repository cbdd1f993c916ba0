"""The task that delivers outbox e-mails, and the sweep of e-mails stuck in `sending`."""
from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import current_app

from scheduler.mail import outbox


class EmailNotSent(RuntimeError):
    """The SMTP server refused the message for good (or MAIL_GIVE_UP_AFTER_S passed)."""


@shared_task(bind=True, name=outbox.SEND_TASK, max_retries=None, acks_late=True)
def send(self, email_id: int) -> dict[str, Any]:
    """Send one outbox e-mail; transient SMTP failures retry with exponential backoff until
    the e-mail's give-up deadline (scheduler.outbox.deliver).

    Safe to repeat (acknowledged late, delivered again if its worker dies): the claim makes a
    second delivery of a message already handed to SMTP send nothing."""
    outcome = outbox.deliver(int(email_id), getattr(self.request, "job_run_id", None))
    if outcome.retry_in_s is not None:
        raise self.retry(countdown=outcome.retry_in_s, exc=EmailNotSent(outcome.error))
    if outcome.state == "failed":
        raise EmailNotSent(outcome.error)
    return {"email_id": int(email_id), "state": outcome.state}


@shared_task(name="mail.sweep", acks_late=True)
def sweep() -> dict[str, int]:
    """Flag e-mails left in `sending` by a worker that died, for a person to review."""
    return {"flagged": outbox.flag_stuck(current_app.config["MAIL_SENDING_STUCK_S"])}
