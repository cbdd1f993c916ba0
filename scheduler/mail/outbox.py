"""The e-mail outbox: `send_email` writes the row in the caller's transaction, one task run
delivers it, and the row's state makes the delivery happen at most once.

Why at most once at the SMTP server: a worker claims the row (`scheduled`/`queued` ->
`sending`) in one UPDATE before it talks to the server, so two workers, a redelivered message
or a retry after a timeout cannot both send. A worker that dies after the server accepted the
message but before the `sent` mark leaves the row in `sending`; the sweep flags it for review
(`needs_review`) instead of resending blindly, because only a person can check whether the
recipient got it. Transient failures (the server unreachable, a 4xx answer) put the row back
to `queued` and retry with capped exponential backoff until MAIL_GIVE_UP_AFTER_S after the
e-mail's due time: a deadline, not a count of attempts, so an SMTP outage of any length up to
the deadline loses nothing whatever the backoff (8 attempts once gave up after ~10 min).
"""
from __future__ import annotations

import logging
import re
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from celery.utils import uuid
from flask import current_app
from flask_mail import Connection, Message
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from models import Email, db
from models.email import CLAIMABLE
from scheduler import records
from scheduler.beat.dispatch import release_after_commit

logger = logging.getLogger(__name__)

SEND_TASK = "mail.send"
#: Largest exponent of the retry backoff: attempts of a day-long outage must not overflow a float.
_MAX_BACKOFF_DOUBLINGS = 30
#: A practical address check: one @, no spaces, controls or header syntax, a dotted domain.
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: Why an e-mail needs a person: it may or may not have reached the server.
UNCERTAIN = "delivery uncertain: the server may have accepted it; check before resending"


class EmailError(ValueError):
    """Input that cannot become an e-mail; str(exc) is a message for the user."""


def check_address(address: str) -> str:
    """Return the address stripped, or raise EmailError (CR/LF and other controls included)."""
    if not isinstance(address, str) or _CONTROL.search(address.strip()):
        raise EmailError("invalid e-mail address")
    address = address.strip()
    if len(address) > 254 or not _ADDRESS.match(address):
        raise EmailError(f"invalid e-mail address: {address!r}")
    return address


def send_email(to: str | list[str], subject: str, text: str, html: str | None = None, *,
               send_at: datetime | None = None, countdown: float | None = None,
               idempotency_key: str | None = None) -> Email:
    """Add an e-mail to the outbox in the caller's transaction; it goes after the commit.

    With send_at or countdown it waits in PostgreSQL until due. With an idempotency_key that
    was used before, the existing e-mail is returned and nothing new is written.
    """
    recipients = [check_address(a) for a in ([to] if isinstance(to, str) else list(to))]
    if not recipients:
        raise EmailError("at least one recipient is required")
    if not isinstance(subject, str) or _CONTROL.search(subject):
        raise EmailError("the subject must be one line of text")
    if send_at is not None and countdown is not None:
        raise EmailError("give send_at or countdown, not both")
    now = datetime.now(timezone.utc)
    due = send_at or (now + timedelta(seconds=float(countdown)) if countdown else now)
    if due.tzinfo is None:
        raise EmailError("send_at needs a time zone")
    if idempotency_key is not None:
        existing = db.session.scalar(select(Email).where(Email.idempotency_key == idempotency_key))
        if existing is not None:
            return existing
    email = Email(recipients=recipients, subject=subject, text_body=text, html_body=html,
                  send_at=due, state="scheduled" if due > now else "queued",
                  idempotency_key=idempotency_key)
    try:
        with db.session.begin_nested():
            db.session.add(email)
            db.session.flush()
    except IntegrityError:  # the same key, written concurrently
        return db.session.scalar(select(Email).where(Email.idempotency_key == idempotency_key))
    run_id = records.create(uuid(), SEND_TASK, [email.id], {}, trigger="mail", eta=due,
                            queue=current_app.config.get("MAIL_QUEUE"),
                            conn=db.session.connection())
    email.run_id = run_id
    if due <= now:
        release_after_commit(db.session(), run_id)
    return email


def cancel(email_id: int) -> bool:
    """Cancel an e-mail that has not been claimed for sending; True if it was."""
    row = db.session.execute(text(
        "UPDATE emails SET state = 'cancelled', updated_at = now() "
        "WHERE id = :id AND state IN ('scheduled', 'queued') RETURNING run_id"
    ), {"id": email_id}).first()
    db.session.commit()
    if row is None:
        return False
    if row.run_id is not None:
        task_id = db.session.scalar(text("SELECT task_id FROM job_runs WHERE id = :id"),
                                    {"id": row.run_id})
        records.revoke(task_id, "e-mail cancelled")
    return True


@dataclass
class Outcome:
    """What a delivery attempt came to."""

    state: str
    retry_in_s: float | None = None
    error: str | None = None


def deliver(email_id: int, run_id: int | None) -> Outcome:
    """Claim the e-mail and send it once with Flask-Mail."""
    cfg = current_app.config
    claimed = db.session.execute(text(
        "UPDATE emails SET state = 'sending', attempts = attempts + 1, claimed_at = now(), "
        "updated_at = now(), run_id = COALESCE(:run_id, run_id) "
        f"WHERE id = :id AND state IN ({', '.join(repr(s) for s in CLAIMABLE)}) "
        "RETURNING id, recipients, subject, text_body, html_body, attempts, send_at"
    ), {"id": email_id, "run_id": run_id}).first()
    db.session.commit()
    if claimed is None:
        state = db.session.scalar(text("SELECT state FROM emails WHERE id = :id"), {"id": email_id})
        return Outcome(state=f"not sent: e-mail is {state or 'gone'}")
    message = Message(subject=claimed.subject, recipients=claimed.recipients,
                      body=claimed.text_body, html=claimed.html_body,
                      sender=cfg["MAIL_DEFAULT_SENDER"])
    # One Message-ID per outbox row: a receiving server can tell a copy from a new message.
    message.msgId = _message_id(email_id)
    phase = {"body_sent": False, "accepted": False}
    try:
        if not cfg["MAIL_SERVER"]:
            raise smtplib.SMTPException("MAIL_SERVER is not configured")
        with _TimedConnection(current_app.extensions["mail"],
                              cfg["MAIL_TIMEOUT_S"]) as connection:
            _track_data_phase(connection.host, phase)
            connection.send(message)
            phase["accepted"] = True
    except Exception as exc:
        error = _describe(exc)
        if phase["accepted"]:
            # The server took the message; only the QUIT afterwards failed.
            logger.warning("e-mail %s sent; closing the SMTP session failed: %s", email_id, error)
        elif phase["body_sent"] and not isinstance(exc, smtplib.SMTPResponseException):
            # No answer after the message went out: the server may have accepted it, so a
            # retry could deliver it twice. A person decides (see flag_stuck).
            _finish(email_id, "failed", f"{UNCERTAIN} ({error})", needs_review=True)
            return Outcome(state="failed", error=f"{UNCERTAIN} ({error})")
        elif _is_transient(exc):
            waited_s = (datetime.now(timezone.utc) - claimed.send_at).total_seconds()
            if waited_s >= cfg["MAIL_GIVE_UP_AFTER_S"]:
                error = (f"gave up: not delivered {waited_s:.0f} s after it was due, "
                         f"{claimed.attempts} attempts (MAIL_GIVE_UP_AFTER_S); last error: {error}")
                _finish(email_id, "failed", error)
                return Outcome(state="failed", error=error)
            _finish(email_id, "queued", error)
            doublings = min(claimed.attempts - 1, _MAX_BACKOFF_DOUBLINGS)
            delay = min(cfg["MAIL_RETRY_MAX_S"], cfg["MAIL_RETRY_BASE_S"] * 2 ** doublings)
            return Outcome(state="queued", retry_in_s=delay, error=error)
        else:
            _finish(email_id, "failed", error)
            return Outcome(state="failed", error=error)
    _finish(email_id, "sent", None)
    return Outcome(state="sent")


def flag_stuck(older_than_s: float) -> int:
    """Flag e-mails left in `sending` by a worker that died: failed, needing review; return
    how many were flagged."""
    flagged = db.session.execute(text(
        "UPDATE emails SET state = 'failed', needs_review = true, updated_at = now(), "
        "last_error = :why WHERE state = 'sending' "
        "AND claimed_at < now() - make_interval(secs => :s)"
    ), {"s": older_than_s, "why": f"{UNCERTAIN} (the worker stopped while sending)"}).rowcount
    db.session.commit()
    return flagged


def _finish(email_id: int, state: str, error: str | None, needs_review: bool = False) -> None:
    db.session.execute(text(
        "UPDATE emails SET state = :state, last_error = :error, needs_review = :review, "
        "updated_at = now(), sent_at = CASE WHEN :state = 'sent' THEN now() ELSE sent_at END "
        "WHERE id = :id"
    ), {"state": state, "error": error, "review": needs_review, "id": email_id})
    db.session.commit()


def _track_data_phase(host: smtplib.SMTP, phase: dict[str, bool]) -> None:
    """Note when the message body starts going out (smtplib's DATA step)."""
    data = host.data

    def tracked_data(msg):
        phase["body_sent"] = True
        return data(msg)

    host.data = tracked_data


def _message_id(email_id: int) -> str:
    domain = current_app.config["MAIL_DEFAULT_SENDER"].rpartition("@")[2] or "localhost"
    return f"<beatkeeper.email.{email_id}@{domain}>"


def _is_transient(exc: Exception) -> bool:
    """Connection trouble and 4xx answers are worth retrying; 5xx and refusals are not."""
    if type(exc) is smtplib.SMTPException:  # our own "not configured", or a protocol error
        return False
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError))


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{rcpt}: {code} {msg.decode(errors='replace')}"
                         for rcpt, (code, msg) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        answer = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return f"{exc.smtp_code} {answer}"
    return f"{type(exc).__name__}: {exc}"


class _TimedConnection(Connection):
    """Flask-Mail's SMTP connection with a timeout on its own socket. Flask-Mail opens
    smtplib.SMTP without one, so a silent server would hang the worker; changing the
    process-wide default timeout is no fix under the threads and gevent pools, where one
    sender's restore leaves another's connection without a timeout."""

    def __init__(self, state, timeout_s: float) -> None:
        super().__init__(state)
        self.timeout_s = timeout_s

    def configure_host(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = smtp(self.mail.server, self.mail.port, timeout=self.timeout_s)
        host.set_debuglevel(int(self.mail.debug))
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


#: States from which an e-mail may be sent again, as a new outbox e-mail.
RESENDABLE = ("failed", "sent")


def resend(email_id: int, *, idempotency_key: str | None = None) -> Email:
    """Add a new e-mail with the recipients, subject and bodies of a failed or sent one, in
    the caller's transaction; it goes after the commit, like any `send_email`.

    The original is left as it was, except that its `needs_review` flag is cleared: a person
    has looked at the uncertain delivery and decided (the caller asks them to confirm that
    the recipient may get the message twice). With an idempotency_key used before (a form
    submitted twice), the e-mail made the first time is returned.
    """
    original = db.session.get(Email, email_id)
    if original is None:
        raise EmailError(f"e-mail {email_id} does not exist")
    if original.state not in RESENDABLE:
        raise EmailError(f"e-mail {email_id} cannot be resent: it is {original.state}"
                         " (only failed and sent e-mails can be)")
    copy = send_email(list(original.recipients), original.subject, original.text_body,
                      original.html_body, idempotency_key=idempotency_key)
    if original.needs_review:
        original.needs_review = False
        original.updated_at = datetime.now(timezone.utc)
    return copy
