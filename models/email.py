"""The e-mail outbox, and the per-task state of failure alerts."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import db
from models.job import TZ

#: scheduled (waiting for send_at) -> queued (its run is due or released) -> sending (claimed
#: by one worker) -> sent | failed; scheduled or queued -> cancelled.
EMAIL_STATES = ("scheduled", "queued", "sending", "sent", "failed", "cancelled")
#: States from which a worker may claim the e-mail and send it.
CLAIMABLE = ("scheduled", "queued")
#: E-mails not sent yet: the outbox backlog.
UNSENT = ("scheduled", "queued", "sending")


class Email(db.Model):
    """One outgoing message; its state makes sending idempotent."""

    __tablename__ = "emails"
    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in EMAIL_STATES)})", name="state"),
        Index("ix_emails_state_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recipients: Mapped[Any] = mapped_column(JSONB)
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    send_at: Mapped[datetime] = mapped_column(TZ)
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Set by the sweep when a worker died while sending: the server may have the message.
    needs_review: Mapped[bool] = mapped_column(Boolean, server_default="false")
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    claimed_at: Mapped[datetime | None] = mapped_column(TZ)
    #: The run that sends (or sent) it.
    run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("job_runs.id", ondelete="SET NULL"), index=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())

    def __repr__(self) -> str:
        return f"<Email {self.id} {self.state}>"


class FailureAlert(db.Model):
    """Per task: when its last failure alert went out, and the digest that folds later ones."""

    __tablename__ = "failure_alerts"

    task_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_alert_at: Mapped[datetime] = mapped_column(TZ)
    #: A scheduled e-mail that collects failures until the quiet period ends.
    digest_email_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("emails.id", ondelete="SET NULL")
    )
    folded: Mapped[int] = mapped_column(Integer, server_default="0")
