"""API: the e-mail outbox, through scheduler.outbox."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import String, cast, select

from app.api import ApiError, bp
from app.api.schemas import EmailListArgs, EmailPageSchema, EmailSchema, SendEmailSchema
from models import Email, db
from scheduler.mail import outbox

ID = "<int(max=9223372036854775807):email_id>"
PAGE_SIZE = 50


def _get(email_id: int) -> Email:
    email = db.session.get(Email, email_id)
    if email is None:
        raise ApiError(404, "not_found", f"no e-mail {email_id}")
    return email


@bp.route("/emails", methods=["GET"], tags=["emails"])
@bp.arguments(EmailListArgs, location="query", as_kwargs=True)
@bp.response(200, EmailPageSchema)
def list_emails(state: str | None = None, to: str | None = None, review: bool = False,
                before: int | None = None, after: int | None = None, limit: int = PAGE_SIZE):
    """The outbox, newest first, paged by id (`before` = `older`, `after` = `newer`)."""
    query = select(Email)
    if state:
        query = query.where(Email.state == state)
    if to:
        like = "%" + re.sub(r"([\\%_])", r"\\\1", to.strip()) + "%"
        query = query.where(cast(Email.recipients, String).ilike(like, escape="\\"))
    if review:
        query = query.where(Email.needs_review)
    forward = after is not None and before is None
    if forward:
        query = query.where(Email.id > after).order_by(Email.id)
    else:
        if before is not None:
            query = query.where(Email.id < before)
        query = query.order_by(Email.id.desc())
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    if forward:
        rows.reverse()
        newer = rows[0].id if more and rows else None
        older = rows[-1].id if rows else None
    else:
        older = rows[-1].id if more else None
        newer = rows[0].id if before is not None and rows else None
    return {"emails": rows, "newer": newer, "older": older}


@bp.route("/emails", methods=["POST"], tags=["emails"])
@bp.arguments(SendEmailSchema)
@bp.response(202, EmailSchema)
def send_email(body: dict[str, Any]):
    """Add an e-mail to the outbox; it goes now, at `send_at`, or after `countdown` s.
    With an `idempotency_key` used before, the e-mail made then is returned."""
    try:
        email = outbox.send_email(body["to"], body["subject"], body["text"], body.get("html"),
                                  send_at=body.get("send_at"), countdown=body.get("countdown"),
                                  idempotency_key=body.get("idempotency_key"))
    except outbox.EmailError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid_email", str(exc)) from None
    db.session.commit()
    return email


@bp.route(f"/emails/{ID}", methods=["GET"], tags=["emails"])
@bp.response(200, EmailSchema)
def get_email(email_id: int):
    """One e-mail."""
    return _get(email_id)


@bp.route(f"/emails/{ID}/cancel", methods=["POST"], tags=["emails"])
@bp.response(200, EmailSchema)
def cancel_email(email_id: int):
    """Cancel an e-mail not yet being sent (scheduled or queued); 409 otherwise."""
    email = _get(email_id)
    if not outbox.cancel(email_id):
        db.session.refresh(email)
        raise ApiError(409, "wrong_state", f"e-mail {email_id} is {email.state}; only "
                       "scheduled or queued e-mails can be cancelled")
    db.session.refresh(email)
    return email
