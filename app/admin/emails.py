"""Admin pages: the e-mail outbox (filtered, paged by id), one e-mail with a safe preview of
its message, and the operator's actions (cancel, resend)."""
from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import String, cast, select

from app.admin import bp
from app.admin.display import when
from app.auth import role_required
from models import Email, db
from models.email import EMAIL_STATES
from scheduler.mail import outbox

#: E-mails per page of the outbox.
PAGE_SIZE = 50
#: The HTML body is served to a sandboxed frame only: no script, no request of any kind
#: (images inline as data: only), no framing by another site.
HTML_PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                    "frame-ancestors 'self'")
#: Shown, and asked, before an e-mail whose delivery was uncertain is sent again.
UNCERTAIN_WARNING = "delivery was uncertain; the recipient may get it twice"
#: A resend form's one-time key: a form submitted twice sends one copy.
_RESEND_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _filters() -> dict[str, Any]:
    state = request.args.get("state", "")
    return {"state": state if state in EMAIL_STATES else "",
            "to": request.args.get("to", "").strip()[:254],
            "review": request.args.get("review") == "1"}


def _like(text: str) -> str:
    """A LIKE pattern that matches `text` literally, anywhere."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


@bp.get("/emails", endpoint="emails")
def email_list() -> str:
    """Newest first, paged by id (keyset): `before` and `after` are ids, never an offset."""
    filters = _filters()
    query = select(Email)
    if filters["state"]:
        query = query.where(Email.state == filters["state"])
    if filters["to"]:
        query = query.where(cast(Email.recipients, String).ilike(_like(filters["to"])))
    if filters["review"]:
        query = query.where(Email.needs_review)
    before = request.args.get("before", type=int)
    after = request.args.get("after", type=int)
    if after is not None:  # the page of newer e-mails, read upwards, shown newest first
        rows = db.session.scalars(query.where(Email.id > after).order_by(Email.id)
                                  .limit(PAGE_SIZE + 1)).all()
        newer, emails = len(rows) > PAGE_SIZE, list(reversed(rows[:PAGE_SIZE]))
        older = bool(emails)
    else:
        if before is not None:
            query = query.where(Email.id < before)
        rows = db.session.scalars(query.order_by(Email.id.desc()).limit(PAGE_SIZE + 1)).all()
        older, emails = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        newer = before is not None and bool(emails)
    kept = {k: v for k, v in (("state", filters["state"]), ("to", filters["to"]),
                              ("review", "1" if filters["review"] else "")) if v}
    return render_template(
        "admin/emails.html", emails=emails, filters=filters, states=EMAIL_STATES, when=when,
        older_url=url_for("admin.emails", before=emails[-1].id, **kept) if older else None,
        newer_url=url_for("admin.emails", after=emails[0].id, **kept) if newer else None,
        newest_url=url_for("admin.emails", **kept) if before or after else None,
        resend_key=secrets.token_urlsafe(16), uncertain=UNCERTAIN_WARNING,
    )


@bp.get("/emails/<int:email_id>", endpoint="email")
def email_detail(email_id: int) -> str:
    email = db.get_or_404(Email, email_id)
    return render_template("admin/email.html", e=email, when=when,
                           resend_key=secrets.token_urlsafe(16), uncertain=UNCERTAIN_WARNING)


@bp.get("/emails/<int:email_id>/html", endpoint="email_html")
def email_html(email_id: int) -> Response:
    """The HTML body alone, for the sandboxed frame of the e-mail's page."""
    email = db.get_or_404(Email, email_id)
    if not email.html_body:
        abort(404, description="This e-mail has no HTML body.")
    response = Response(email.html_body, mimetype="text/html")
    # Set here, so that app/security.py's defaults (which forbid any framing) do not apply.
    response.headers["Content-Security-Policy"] = HTML_PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _back(email_id: int) -> Response:
    if request.form.get("back") == "detail":
        return redirect(url_for("admin.email", email_id=email_id))
    return redirect(request.referrer if _same_outbox(request.referrer)
                    else url_for("admin.emails"))


def _same_outbox(url: str | None) -> bool:
    """The outbox list of this site (with its filters and page), to return to it."""
    return bool(url) and url.startswith(request.host_url.rstrip("/") + url_for("admin.emails"))


@bp.post("/emails/<int:email_id>/cancel", endpoint="email_cancel")
@role_required("operator")
def email_cancel(email_id: int) -> Response:
    if outbox.cancel(email_id):
        flash(f"E-mail {email_id} cancelled: it will not be sent.", "info")
        return _back(email_id)
    email = db.get_or_404(Email, email_id)
    why = {"sending": "it is being sent right now",
           "sent": f"it was already sent ({when(email.sent_at)})",
           "failed": "it has already failed; nothing is waiting to be sent",
           "cancelled": "it was already cancelled"}.get(email.state, f"it is {email.state}")
    flash(f"E-mail {email_id} cannot be cancelled: {why}.", "error")
    return _back(email_id)


@bp.post("/emails/<int:email_id>/resend", endpoint="email_resend")
@role_required("operator")
def email_resend(email_id: int) -> Response:
    """A new outbox e-mail with the same content, for a failed or a sent one."""
    email = db.get_or_404(Email, email_id)
    if email.needs_review and request.form.get("confirm_uncertain") != "1":
        flash(f"Not resent: {UNCERTAIN_WARNING}. Confirm that this is acceptable to resend.",
              "error")
        return redirect(url_for("admin.email", email_id=email_id))
    key = request.form.get("key", "")
    try:
        copy = outbox.resend(email_id, idempotency_key=f"resend:{email_id}:{key}"
                             if _RESEND_KEY.match(key) else None)
    except outbox.EmailError as exc:
        db.session.rollback()
        flash(f"Not resent: {exc}.", "error")
        return _back(email_id)
    db.session.commit()
    flash(f"E-mail {email_id} resent as a new e-mail, {copy.id}.", "info")
    return redirect(url_for("admin.email", email_id=copy.id))
