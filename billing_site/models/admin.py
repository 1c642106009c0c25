"""Refunds, disputes and the admins' audit log."""

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billing_site.extensions import db
from billing_site.models.billing import Order
from billing_site.models.types import UTCDateTime, utcnow


class Refund(db.Model):
    __tablename__ = "refunds"
    # The sequence number makes the idempotency key: order 7's second refund is
    # "refund-7-2" however many times the confirm button is pressed.
    __table_args__ = (UniqueConstraint("order_id", "sequence", name="uq_refunds_order_sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    sequence: Mapped[int]
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount_cents: Mapped[int]
    reason: Mapped[str | None] = mapped_column(String(50))
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, succeeded, failed
    failure_reason: Mapped[str | None] = mapped_column(Text)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The one-time token of the admin's confirm form: twenty clicks of one form
    # collide on this unique column and make one refund.
    request_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    # What this refund took from the customer, so a refund that fails later gives
    # back exactly that.
    credits_clawed_back: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    order: Mapped[Order] = relationship()

    @property
    def idempotency_key(self) -> str:
        return f"refund-{self.order_id}-{self.sequence}"


class Dispute(db.Model):
    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    stripe_dispute_id: Mapped[str] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(40))
    evidence_due_by: Mapped[datetime | None] = mapped_column(UTCDateTime())
    credits_clawed_back: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    order: Mapped[Order | None] = relationship()


class AuditLog(db.Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(50))
    target_type: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str] = mapped_column(String(255))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
