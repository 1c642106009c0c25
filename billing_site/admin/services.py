"""What the admin pages read, and the admin actions that are not refunds.

Reads return plain values and paginations for the templates. Each action is one
transactional entry point that writes its audit entry in the same transaction
and commits once. Refunds live in billing_site.refunds, disputes in
billing_site.disputes.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app
from sqlalchemy import func, or_, select

from billing_site import audit, credits
from billing_site.disputes import OPEN_STATUSES
from billing_site.extensions import db
from billing_site.models import (
    AuditLog,
    CreditLot,
    Dispute,
    LedgerEntry,
    Order,
    Refund,
    StripeEvent,
    Subscription,
    User,
    utcnow,
)
from billing_site.webhook.services import PENDING_STATUSES
from billing_site.worker import heartbeat

PER_PAGE = 25
LEDGER_PER_PAGE = 20
# Statuses of payments whose money came in (needs_review: Stripe took it, but not
# what was expected; it counts as received until an admin refunds it).
PAID_ORDER_STATUSES = ("paid", "partially_refunded", "refunded", "disputed", "needs_review")
OPEN_DISPUTE_STATUSES = OPEN_STATUSES
# "processing" is not stored: it is what a live worker said, at its last beat, it was applying.
EVENT_STATUSES = ("queued", "processing", "retrying", "dead", "processed", "ignored")


# --- overview -------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    revenue_today_cents: int
    revenue_30_days_cents: int
    paid_orders_30_days: int
    refunds_30_days_cents: int
    refunds_30_days: int
    open_disputes: int
    dead_events: int
    queue_depth: int  # events stored and not yet applied (queued or retrying)
    oldest_unprocessed_seconds: int | None
    past_due_subscriptions: int
    needs_review: list = field(default_factory=list)  # payments Stripe's figures contradict
    days: list = field(default_factory=list)  # RevenueDay, newest first


@dataclass(frozen=True)
class RevenueDay:
    day: date
    received_cents: int
    refunded_cents: int

    @property
    def net_cents(self) -> int:
        return self.received_cents - self.refunded_cents


def overview(now: datetime | None = None) -> Overview:
    """The numbers on /admin: revenue is money paid minus money refunded, by day paid/refunded."""
    now = now or utcnow()
    midnight = datetime.combine(now.date(), time.min, tzinfo=UTC)
    month_ago = now - timedelta(days=30)
    return Overview(
        revenue_today_cents=_paid_cents(midnight) - _refunded_cents(midnight)[0],
        revenue_30_days_cents=_paid_cents(month_ago) - _refunded_cents(month_ago)[0],
        paid_orders_30_days=db.session.scalar(
            select(func.count(Order.id)).where(
                Order.status.in_(PAID_ORDER_STATUSES), Order.paid_at >= month_ago
            )
        ),
        refunds_30_days_cents=_refunded_cents(month_ago)[0],
        refunds_30_days=_refunded_cents(month_ago)[1],
        open_disputes=_count(Dispute, Dispute.status.in_(OPEN_DISPUTE_STATUSES)),
        dead_events=_count(StripeEvent, StripeEvent.status == "dead"),
        queue_depth=_count(StripeEvent, StripeEvent.status.in_(PENDING_STATUSES)),
        oldest_unprocessed_seconds=_oldest_unprocessed_seconds(now),
        past_due_subscriptions=_count(Subscription, Subscription.status == "past_due"),
        needs_review=_needs_review(),
        days=revenue_by_day(month_ago),
    )


def revenue_by_day(since: datetime) -> list[RevenueDay]:
    """Money received (every payment's actual amount) and refunded, per UTC day, newest first."""
    from billing_site.account.services import _as_date, _utc_day

    dialect = db.session.get_bind().dialect.name
    paid_day = _utc_day(Order.paid_at, dialect)
    received = db.session.execute(
        select(paid_day, func.sum(Order.amount_cents))
        .where(Order.status.in_(PAID_ORDER_STATUSES), Order.paid_at >= since)
        .group_by(paid_day)
    ).all()
    refund_day = _utc_day(Refund.updated_at, dialect)
    refunded = db.session.execute(
        select(refund_day, func.sum(Refund.amount_cents))
        .where(Refund.status == "succeeded", Refund.updated_at >= since)
        .group_by(refund_day)
    ).all()
    days: dict[date, list[int]] = {}
    for day, cents in received:
        days.setdefault(_as_date(day), [0, 0])[0] = int(cents or 0)
    for day, cents in refunded:
        days.setdefault(_as_date(day), [0, 0])[1] = int(cents or 0)
    return [RevenueDay(day, *days[day]) for day in sorted(days, reverse=True)]


def _needs_review(limit: int = 20) -> list[Order]:
    return list(
        db.session.execute(
            select(Order)
            .where(Order.status == "needs_review")
            .order_by(Order.id.desc())
            .limit(limit)
        ).scalars()
    )


def _oldest_unprocessed_seconds(now: datetime) -> int | None:
    oldest = db.session.scalar(
        select(func.min(StripeEvent.received_at)).where(StripeEvent.status.in_(PENDING_STATUSES))
    )
    return None if oldest is None else max(int((now - oldest).total_seconds()), 0)


def _paid_cents(since: datetime) -> int:
    return db.session.scalar(
        select(func.coalesce(func.sum(Order.amount_cents), 0)).where(
            Order.status.in_(PAID_ORDER_STATUSES), Order.paid_at >= since
        )
    )


def _refunded_cents(since: datetime) -> tuple[int, int]:
    total, count = db.session.execute(
        select(func.coalesce(func.sum(Refund.amount_cents), 0), func.count(Refund.id)).where(
            Refund.status == "succeeded", Refund.updated_at >= since
        )
    ).one()
    return total, count


def _count(model, condition) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(condition))


# --- orders ---------------------------------------------------------------------------


@dataclass
class OrderFilters:
    """The orders page's query string, checked; `errors` say what was ignored."""

    query: str = ""
    status: str = ""
    kind: str = ""
    date_from: date | None = None
    date_to: date | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args) -> "OrderFilters":
        filters = cls(
            query=args.get("q", "").strip(),
            status=args.get("status", "").strip(),
            kind=args.get("kind", "").strip(),
        )
        filters.date_from = filters._date(args.get("from", ""), "From")
        filters.date_to = filters._date(args.get("to", ""), "To")
        return filters

    def _date(self, text: str, label: str) -> date | None:
        if not text.strip():
            return None
        try:
            value = date.fromisoformat(text.strip())
        except ValueError:
            self.errors.append(f"{label} date “{text}” is not a date like 2026-01-31; ignored.")
            return None
        # 9999-12-31 would overflow when the To day is turned into its end.
        if not FILTER_FIRST_DATE <= value <= FILTER_LAST_DATE:
            self.errors.append(
                f"{label} date “{text}” is outside {FILTER_FIRST_DATE.year}–"
                f"{FILTER_LAST_DATE.year}; ignored."
            )
            return None
        return value

    def as_args(self) -> dict:
        args = {"q": self.query, "status": self.status, "kind": self.kind}
        args["from"] = self.date_from.isoformat() if self.date_from else ""
        args["to"] = self.date_to.isoformat() if self.date_to else ""
        return {name: value for name, value in args.items() if value}


FILTER_FIRST_DATE = date(1970, 1, 1)
FILTER_LAST_DATE = date(9998, 12, 31)


def search_orders(filters: OrderFilters, page: int):
    """Payments matching an email, a site id (order or user) or any Stripe id, newest first."""
    return db.paginate(orders_query(filters), page=page, per_page=PER_PAGE, error_out=False)


def orders_query(filters: OrderFilters):
    """The select behind the orders page, newest first; the CSV export reads the same one."""
    statement = select(Order).join(User, Order.user_id == User.id)
    if filters.query:
        statement = statement.where(_order_matches(filters.query))
    if filters.status:
        statement = statement.where(Order.status == filters.status)
    if filters.kind:
        statement = statement.where(Order.kind == filters.kind)
    if filters.date_from:
        statement = statement.where(Order.created_at >= _start_of(filters.date_from))
    if filters.date_to:
        statement = statement.where(Order.created_at < _start_of(filters.date_to + timedelta(1)))
    return statement.order_by(Order.created_at.desc(), Order.id.desc())


def _order_matches(query: str):
    text = query.lstrip("#")
    conditions = [
        func.lower(User.email).contains(query.lower(), autoescape=True),
        Order.checkout_session_id == query,
        Order.payment_intent_id == query,
        Order.charge_id == query,
        Order.stripe_subscription_id == query,
        Order.stripe_invoice_id == query,
        Order.stripe_customer_id == query,
        User.stripe_customer_id == query,
        Order.id.in_(select(Refund.order_id).where(Refund.stripe_refund_id == query)),
        Order.id.in_(select(Dispute.order_id).where(Dispute.stripe_dispute_id == query)),
    ]
    if text.isdigit() and len(text) < 10:
        # A site id: the order's own, or the customer's (all their payments).
        conditions += [Order.id == int(text), Order.user_id == int(text)]
    return or_(*conditions)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass(frozen=True)
class OrderDetail:
    order: Order
    ledger: list[LedgerEntry]
    refunds: list[Refund]
    disputes: list[Dispute]
    balance: int


def order_detail(order_id: int) -> OrderDetail | None:
    order = db.session.get(Order, order_id)
    if order is None:
        return None
    refund_refs = [f"refund:{refund_id}" for refund_id in _refund_ids(order.id)]
    ledger = db.session.scalars(
        select(LedgerEntry)
        .where(
            or_(
                LedgerEntry.order_id == order.id,
                LedgerEntry.reference.in_([f"order:{order.id}", *refund_refs]),
            )
        )
        .order_by(LedgerEntry.id)
    ).all()
    refunds = db.session.scalars(
        select(Refund).where(Refund.order_id == order.id).order_by(Refund.sequence)
    ).all()
    disputes = db.session.scalars(
        select(Dispute).where(Dispute.order_id == order.id).order_by(Dispute.id)
    ).all()
    return OrderDetail(order, ledger, refunds, disputes, credits.current_balance(order.user_id))


def _refund_ids(order_id: int) -> list[int]:
    return list(db.session.scalars(select(Refund.id).where(Refund.order_id == order_id)))


# --- disputes, events, audit -----------------------------------------------------------


def list_disputes(page: int):
    statement = select(Dispute).order_by(
        Dispute.status.in_(OPEN_DISPUTE_STATUSES).desc(),
        Dispute.evidence_due_by.is_(None),
        Dispute.evidence_due_by,
        Dispute.id.desc(),
    )
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


def list_events(status: str, event_type: str, page: int):
    statement = select(StripeEvent)
    if status == "processing":
        statement = statement.where(StripeEvent.id.in_(processing_event_ids()))
    elif status:
        statement = statement.where(StripeEvent.status == status)
    if event_type:
        statement = statement.where(StripeEvent.type.contains(event_type, autoescape=True))
    statement = statement.order_by(StripeEvent.received_at.desc(), StripeEvent.id)
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


def processing_event_ids() -> set[str]:
    """The events live workers are applying right now (as of their last heartbeat)."""
    stale_after = timedelta(seconds=current_app.config["WORKER_STALE_AFTER_SECONDS"])
    return heartbeat.processing_event_ids(stale_after)


def event_types() -> list[str]:
    return list(db.session.scalars(select(StripeEvent.type).distinct().order_by(StripeEvent.type)))


class ReplayRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def replay_event(admin_id: int, event_id: str) -> str:
    """Apply a stored event again now, whatever its status (handlers are idempotent); audit it.

    The replay commits its own transaction (the worker's step); the audit entry
    is committed right after it, with the outcome, success or not.
    """
    from billing_site.webhook.services import EventNotFound, HandlerFailed
    from billing_site.webhook.services import replay_event as replay

    try:
        outcome = replay(event_id)
    except EventNotFound as missing:
        raise ReplayRefused("There is no such event.") from missing
    except HandlerFailed as failure:
        outcome = f"failed again: {failure.error!r}"
    audit.record(admin_id, "event.replay", "stripe_event", event_id, {"outcome": outcome})
    db.session.commit()
    return outcome


def list_audit(page: int):
    statement = select(AuditLog).order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


def admin_emails(entries) -> dict[int, str]:
    ids = {entry.admin_id for entry in entries if entry.admin_id}
    if not ids:
        return {}
    return dict(db.session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


# --- customers ----------------------------------------------------------------------


def search_users(query: str, page: int):
    statement = select(User)
    if query:
        text = query.lstrip("#")
        conditions = [
            func.lower(User.email).contains(query.lower(), autoescape=True),
            User.stripe_customer_id == query,
        ]
        if text.isdigit() and len(text) < 10:
            conditions.append(User.id == int(text))
        statement = statement.where(or_(*conditions))
    statement = statement.order_by(User.created_at.desc(), User.id.desc())
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


@dataclass(frozen=True)
class CustomerDetail:
    user: User
    balance: int
    lots: list[CreditLot]
    ledger: object  # a pagination of LedgerEntry, newest first
    orders: list[Order]
    subscriptions: list[Subscription]


def customer_detail(user_id: int, ledger_page: int) -> CustomerDetail | None:
    user = db.session.get(User, user_id)
    if user is None:
        return None
    return CustomerDetail(
        user=user,
        balance=credits.current_balance(user.id),
        lots=db.session.scalars(
            select(CreditLot)
            .where(CreditLot.user_id == user.id, CreditLot.credits_remaining != 0)
            .order_by(CreditLot.expires_at.is_(None), CreditLot.expires_at, CreditLot.id)
        ).all(),
        ledger=customer_ledger(user.id, ledger_page),
        orders=db.session.scalars(
            select(Order).where(Order.user_id == user.id).order_by(Order.id.desc())
        ).all(),
        subscriptions=db.session.scalars(
            select(Subscription)
            .where(Subscription.user_id == user.id)
            .order_by(Subscription.id.desc())
        ).all(),
    )


def customer_ledger(user_id: int, page: int):
    statement = (
        select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id.desc())
    )
    return db.paginate(statement, page=page, per_page=LEDGER_PER_PAGE, error_out=False)


def adjust_credits(
    admin_id: int,
    user_id: int,
    delta: int,
    *,
    reason: str,
    expires_on: date | None,
    token: str,
) -> str:
    """Give (+) or take (−) credits through the ledger, audited, once per form."""
    user = credits.lock_user(user_id)
    reference = f"adjustment:{token}"
    already = db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.reference == reference))
    if already is not None:
        db.session.rollback()
        return "This adjustment was already made."
    entry = audit.record(
        admin_id,
        "credits.adjust",
        "user",
        user.id,
        {"delta": delta, "reason": reason, "expires_on": expires_on and expires_on.isoformat()},
    )
    if delta > 0:
        credits.grant(
            user.id,
            delta,
            source="admin",
            source_ref=f"audit:{entry.id}",
            expires_at=_start_of(expires_on) if expires_on else None,
            kind="adjust",
            reference=reference,
            note=reason,
        )
    else:
        credits.claw_back(user.id, -delta, reference=reference, note=reason, kind="adjust")
    db.session.commit()
    sign = "+" if delta > 0 else "−"
    return f"Adjusted {user.email} by {sign}{abs(delta)} credits."
