"""Outgoing email (the queue and, in development, the outbox) and who wants which."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing_site.extensions import db
from billing_site.models.types import UTCDateTime, utcnow

# queued: waiting for its (next) attempt; sent; stored: no mail server is
# configured (development), kept for /dev/mail; failed: gave up after retrying.
EMAIL_STATUSES = ("queued", "sent", "stored", "failed")


class OutboundEmail(db.Model):
    """One message, inserted in the transaction of what caused it, once per cause."""

    __tablename__ = "outbound_emails"
    __table_args__ = (
        Index("ix_outbound_emails_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # What caused it ("receipt:order:12", "expiring:lot:7"): unique, so a cause
    # applied any number of times makes one message.
    cause_key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(255))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EmailPreference(db.Model):
    """A customer's choice about the optional emails; no row means all of them on."""

    __tablename__ = "email_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    credits_expiring: Mapped[bool] = mapped_column(default=True)
    low_balance: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
