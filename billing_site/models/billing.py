"""Orders, credit lots, the ledger, subscriptions and Stripe events."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billing_site.extensions import db
from billing_site.models.types import UTCDateTime, utcnow
from billing_site.models.user import User

ORDER_STATUSES = (
    "pending",
    "paid",
    "failed",
    "expired",
    "refunded",
    "partially_refunded",
    "disputed",
    "needs_review",  # Stripe's amount or currency is not what was expected: nothing granted
)
# kind: "pack", "subscription" (a subscription's first payment, via Checkout),
# "renewal" and "proration" (later invoices of a subscription).
ORDER_KINDS = ("pack", "subscription", "renewal", "proration")


def _expected_default(context) -> int:
    # An order is created at the price it expects; what Stripe took is booked later.
    return context.get_current_parameters()["amount_cents"]


class Order(db.Model):
    """One payment: a Checkout Session or a Stripe invoice (the payment record)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # one of ORDER_KINDS
    item_id: Mapped[str] = mapped_column(String(50))  # the pack id or the tier
    # What Stripe actually took once paid (the expected amount until then).
    amount_cents: Mapped[int]
    expected_amount_cents: Mapped[int] = mapped_column(BigInteger, default=_expected_default)
    amount_subtotal_cents: Mapped[int | None] = mapped_column(BigInteger)
    amount_discount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_tax_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    promotion_code: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int]  # for a subscription: the tier's monthly credits (-1 unlimited)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    receipt_url: Mapped[str | None] = mapped_column(Text)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    description: Mapped[str | None] = mapped_column(String(255))
    # What the customer is told about this payment beyond its status.
    customer_notice: Mapped[str | None] = mapped_column(Text)
    amount_refunded_cents: Mapped[int] = mapped_column(default=0)
    credits_clawed_back: Mapped[int] = mapped_column(default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()

    @property
    def refundable_cents(self) -> int:
        return self.amount_cents - self.amount_refunded_cents


class CreditLot(db.Model):
    """Credits from one source, spent oldest-expiry first.

    Sources: "pack" (ref: order id), "monthly" (ref: invoice id), "free" (ref:
    user and month), "admin" (ref: audit entry), "debt" (one per user: a negative
    lot holding what a clawback took beyond the live credits).
    """

    __tablename__ = "credit_lots"
    __table_args__ = (UniqueConstraint("source", "source_ref", name="uq_credit_lots_source_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))
    source_ref: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    credits_granted: Mapped[int] = mapped_column(BigInteger)
    credits_remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def is_live(self, now: datetime) -> bool:
        return self.credits_remaining != 0 and (self.expires_at is None or self.expires_at > now)


class LedgerEntry(db.Model):
    """Append-only: every change to a balance, with the balance after it."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # grant, spend, compensate, clawback, restore, expire, adjust
    kind: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("credit_lots.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    # What caused it, as "<noun>:<id>" (generation:12, refund:3, dispute:dp_…).
    reference: Mapped[str | None] = mapped_column(String(255), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Subscription(db.Model):
    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    tier: Mapped[str] = mapped_column(String(20))
    # Stripe's statuses: incomplete, trialing, active, past_due, canceled, unpaid, …
    status: Mapped[str] = mapped_column(String(30))
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The `created` time of the newest event applied: an older event never wins.
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_SUBSCRIPTION_STATUSES


LIVE_SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due")


# Events the worker still has to apply (the worker's claim spells it the same way).
DUE_PREDICATE = "status IN ('queued', 'retrying')"


class StripeEvent(db.Model):
    """Every event Stripe delivered: the webhook inbox and the worker's queue in one table.

    The webhook only inserts a row (status "queued"); the worker claims due rows
    (status queued or retrying, next_attempt_at passed), applies the handler and
    marks the row done in one transaction. See billing_site/worker/.
    """

    __tablename__ = "stripe_events"
    __table_args__ = (
        # The worker's claim query: only undone rows, oldest due first.
        Index(
            "ix_stripe_events_due",
            "next_attempt_at",
            postgresql_where=text(DUE_PREDICATE),
            sqlite_where=text(DUE_PREDICATE),
        ),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_… id
    type: Mapped[str] = mapped_column(String(100), index=True)
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The payment the object belongs to (charges, refunds, disputes, payment
    # intents), so fulfilling an order can find events that came before it.
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())  # Stripe's `created`
    # Deferred: a repeated delivery only needs the status, and the payload is
    # the bulk of the row.
    payload: Mapped[dict] = mapped_column(JSON, deferred=True)
    # queued, retrying (a handler raised; next_attempt_at says when), dead (out
    # of attempts), processed, ignored (no handler for the type).
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the worker may (next) try it; NULL once done.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(255))  # the handler's last outcome


class WorkerHeartbeat(db.Model):
    """One row per running worker process, refreshed every few seconds (/healthz reads it)."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid:start
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # The event it is applying at its last beat (admin shows it as "processing").
    current_event_id: Mapped[str | None] = mapped_column(String(255))


class JobRun(db.Model):
    """A scheduled job's run in one time slot: the unique key lets one worker of many run it."""

    __tablename__ = "job_runs"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # start of slot, epoch s
    worker_id: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(Text)
