"""`flask --app app emails send|list|cancel`."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app.cli_output import echo_rows
from models import Email, db
from models.email import EMAIL_STATES
from scheduler.beat import slots
from scheduler.mail import outbox
from scheduler.beat.schedules import parse_time
from scheduler.beat.slots import ScheduleError

group = AppGroup("emails", help="Send, list and cancel outbox e-mails.")


@group.command("send")
@click.argument("to", nargs=-1, required=True)
@click.option("--subject", required=True)
@click.option("--text", "text_body", required=True, help="Plain-text body.")
@click.option("--html", "html_body", help="HTML body.")
@click.option("--in", "delay", help="Send after this delay, e.g. 90s, 10m.")
@click.option("--at", "at", help="Send at this time, e.g. 2026-12-24T18:00+01:00.")
@click.option("--key", help="Idempotency key: a second send with the same key does nothing.")
def send_command(to, subject, text_body, html_body, delay, at, key) -> None:
    """Queue an e-mail to TO (one or more addresses)."""
    try:
        countdown = slots.parse_every(delay) if delay else None
        send_at = parse_time(at) if at else None
        email = outbox.send_email(list(to), subject, text_body, html_body, send_at=send_at,
                                  countdown=countdown, idempotency_key=key)
    except (outbox.EmailError, ScheduleError) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc))
    db.session.commit()
    click.echo(f"{email.id} {email.state} send_at={email.send_at.isoformat()}")


@group.command("list")
@click.option("--state", type=click.Choice(EMAIL_STATES))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(state, limit, as_json) -> None:
    """List the newest e-mails."""
    query = select(Email).order_by(Email.id.desc()).limit(limit)
    if state:
        query = query.where(Email.state == state)
    rows = [{
        "id": e.id, "state": e.state, "to": ", ".join(e.recipients), "subject": e.subject,
        "send_at": e.send_at.isoformat(), "sent_at": e.sent_at.isoformat() if e.sent_at else None,
        "attempts": e.attempts, "last_error": e.last_error, "needs_review": e.needs_review,
    } for e in db.session.scalars(query)]
    echo_rows(rows, ("id", "state", "to", "subject", "send_at", "attempts", "last_error"),
              as_json)


@group.command("cancel")
@click.argument("email_id", type=int)
def cancel_command(email_id: int) -> None:
    """Cancel an e-mail that has not started sending."""
    if not outbox.cancel(email_id):
        email = db.session.get(Email, email_id)
        state = email.state if email else "not found"
        raise click.ClickException(f"e-mail {email_id} cannot be cancelled: it is {state}")
    click.echo(f"cancelled {email_id}")


def init_app(app: Flask) -> None:
    app.cli.add_command(group)
