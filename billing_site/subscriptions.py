"""Subscriptions as Stripe reports them: upserts, the ordering guard and renewals.

Stripe's subscription events come at least once and in any order, so each one is
applied only if it is not older than the newest one already applied
(`Subscription.last_event_at`), and a canceled subscription is terminal: no
`updated` event, however late or early, brings it back. Nothing here commits;
the webhook's dispatcher commits once per event.

LOCK ORDER: a subscription's events and its first payment lock the customer's
row first, then the subscription and order rows. Inserting a subscription or
an order takes a key-share lock on the customer, so any other order (rows, then
the customer) deadlocks against the one-live-subscription check, which must
hold the customer while it looks at their other payments.
"""

from datetime import UTC, datetime

from sqlalchemy import or_, select

from billing_site import audit, credits, invoices
from billing_site.catalog import current_catalog
from billing_site.extensions import db, dialect_insert
from billing_site.models import Order, Subscription, User
from billing_site.stripe_gateway import current_gateway, stripe_id

TERMINAL_STATUSES = ("canceled", "incomplete_expired")
# How far along its life a status is. Stripe's `created` has one-second
# resolution, so two events of one second are ordered by this instead: the one
# further along wins (an `incomplete` never overwrites an `active` of the same second).
STATUS_PROGRESS = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 2, "unpaid": 2}
# Statuses a paid invoice moves to "active" (Stripe sends the matching
# subscription.updated too, perhaps later; this keeps the banner honest meanwhile).
RECOVERED_BY_PAYMENT = ("incomplete", "past_due", "unpaid")


def apply_subscription(subscription: dict, event_created: int, *, deleted: bool = False) -> str:
    """Upsert the subscription row from a Stripe subscription object; returns the outcome."""
    user = find_user(subscription.get("metadata"), subscription.get("customer"))
    if user is None:
        return "unknown_user"
    credits.lock_user(user.id)  # customer first, then their rows (see LOCK ORDER)
    tier = tier_of_subscription(subscription)
    existing = lock_subscription(subscription["id"])
    if existing is None and tier is None:
        return "unknown_tier"
    row = existing or _insert_and_lock(subscription, user, tier, event_created)
    status = "canceled" if deleted else subscription["status"]
    if not _is_news(row, status, _time(event_created), deleted=deleted):
        return f"noop: stale event (subscription {row.status})"
    _copy_fields(row, subscription, status, tier)
    row.last_event_at = max(filter(None, (row.last_event_at, _time(event_created))))
    return f"subscription {row.status}"


def renew_from_invoice(invoice: dict, event_created: int, stripe_event_id: str) -> str:
    """invoice.paid: book the payment once per invoice, then grant the period's credits once."""
    subscription_id = subscription_id_of_invoice(invoice)
    if subscription_id is None:
        return "ignored: not a subscription invoice"
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    user = find_user(details.get("metadata"), invoice.get("customer"))
    if user is not None:
        credits.lock_user(user.id)  # customer first, then their rows (see LOCK ORDER)
    row = lock_subscription(subscription_id) or _create_from_invoice(invoice, event_created)
    if row is None:
        return "unknown_subscription"
    if row.status in RECOVERED_BY_PAYMENT and _is_news(row, "active", _time(event_created)):
        row.status = "active"
        row.last_event_at = _time(event_created)
    period_start, period_end = invoice_period(invoice)
    if period_end is not None and (row.current_period_end or period_end) <= period_end:
        row.current_period_start, row.current_period_end = period_start, period_end
    order, booked = invoices.book_invoice(invoice, row)
    if not invoices.grants_allowance(order):
        return f"{booked}; no credits: payment {order.status}"
    return _grant_allowance(row, invoice, period_end, stripe_event_id, order)


def mark_past_due(invoice: dict, event_created: int) -> str:
    """invoice.payment_failed: a live subscription becomes past_due (the account shows a banner)."""
    subscription_id = subscription_id_of_invoice(invoice)
    if subscription_id is None:
        return "ignored: not a subscription invoice"
    row = lock_subscription(subscription_id)
    if row is None:
        return "unknown_subscription"
    # A failed first invoice leaves the subscription `incomplete`, as Stripe does.
    if row.status not in ("active", "trialing") or not _is_news(
        row, "past_due", _time(event_created)
    ):
        return f"noop: subscription {row.status}"
    row.status = "past_due"
    row.last_event_at = _time(event_created)
    return "past_due"


# --- finding things ---------------------------------------------------------------


def lock_subscription(stripe_subscription_id: str) -> Subscription | None:
    return db.session.execute(
        select(Subscription)
        .where(Subscription.stripe_subscription_id == stripe_subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def find_user(metadata: dict | None, customer) -> User | None:
    """The user named in the metadata (checkout puts user_id there), else by Stripe customer."""
    user_id = str((metadata or {}).get("user_id") or "")
    if user_id.isdigit():
        user = db.session.get(User, int(user_id))
        if user is not None:
            return user
    customer_id = stripe_id(customer)
    if not customer_id:
        return None
    return db.session.execute(
        select(User).where(User.stripe_customer_id == customer_id)
    ).scalar_one_or_none()


def tier_of_subscription(subscription: dict) -> str | None:
    """The catalog tier: metadata.tier, else the order in its metadata, else by price."""
    tier = tier_from_metadata(subscription.get("metadata"))
    if tier:
        return tier
    amount = (_first_item(subscription).get("price") or {}).get("unit_amount")
    return next(
        (t.id for t in current_catalog().tiers if not t.is_free and t.price_cents == amount), None
    )


def tier_from_metadata(metadata: dict | None) -> str | None:
    """The tier checkout wrote into the metadata, or that of the order it names."""
    metadata = metadata or {}
    tier = _paid_tier(metadata.get("tier"))
    order_id = str(metadata.get("order_id") or "")
    if tier is None and order_id.isdigit():
        order = db.session.get(Order, int(order_id))
        if order is not None and order.kind == "subscription":
            tier = _paid_tier(order.item_id)
    return tier


def subscription_id_of_invoice(invoice: dict) -> str | None:
    """Where API 2026-07-29.dahlia puts it (parent.subscription_details), or older shapes."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    subscription_id = stripe_id(details.get("subscription")) or stripe_id(
        invoice.get("subscription")
    )
    if subscription_id:
        return subscription_id
    line_parent = (_subscription_line(invoice) or {}).get("parent") or {}
    return stripe_id((line_parent.get("subscription_item_details") or {}).get("subscription"))


def invoice_period(invoice: dict) -> tuple[datetime | None, datetime | None]:
    """The service period the invoice pays for (its subscription line's period)."""
    period = (_subscription_line(invoice) or {}).get("period") or {}
    if not period.get("end"):
        return None, None
    return _time(period.get("start")), _time(period["end"])


# --- writing ----------------------------------------------------------------------


def _grant_allowance(
    row: Subscription,
    invoice: dict,
    period_end: datetime | None,
    stripe_event_id: str,
    order: Order | None = None,
) -> str:
    tier = current_catalog().tier(row.tier)
    if tier is None or tier.is_unlimited or tier.credits_per_month <= 0:
        return f"no credits: {row.tier} tier"
    if period_end is None:
        return "no credits: invoice has no period"
    # One lot per invoice id (unique), under the user's lock: however many
    # deliveries of this invoice arrive, in parallel or not, one grant.
    lot = credits.replace_allowance(
        row.user_id,
        tier.credits_per_month,
        source="monthly",
        source_ref=invoice["id"],
        expires_at=period_end,
        stripe_event_id=stripe_event_id,
        note=f"{tier.name} plan, monthly credits",
    )
    if lot is None:
        return "noop: invoice already granted (or its period is over)"
    # The payment this lot came with: a refund of it claws back its share.
    lot.order_id = order.id if order is not None else None
    return f"granted {tier.credits_per_month}"


def _create_from_invoice(invoice: dict, event_created: int) -> Subscription | None:
    """invoice.paid came before any subscription event: build the row from what we can see.

    The invoice carries the subscription's metadata (parent.subscription_details);
    when that does not name the user and tier, ask Stripe for the subscription.
    """
    subscription_id = subscription_id_of_invoice(invoice)
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    metadata = details.get("metadata") or {}
    user = find_user(metadata, invoice.get("customer"))
    tier = tier_from_metadata(metadata)
    if user is None or tier is None:
        subscription = current_gateway().retrieve_subscription(subscription_id)
        if apply_subscription(subscription, event_created).startswith("unknown"):
            return None
        return lock_subscription(subscription_id)
    period_start, period_end = invoice_period(invoice)
    values = {
        "id": subscription_id,
        "customer": invoice.get("customer"),
        "status": "active",
        "items": {"data": [{"current_period_start": None, "current_period_end": None}]},
    }
    row = _insert_and_lock(values, user, tier, event_created)
    row.current_period_start, row.current_period_end = period_start, period_end
    return row


def _insert_and_lock(subscription: dict, user: User, tier: str, event_created: int) -> Subscription:
    """Create the row if no parallel event did first (ON CONFLICT DO NOTHING), then lock it."""
    item = _first_item(subscription)
    values = {
        "user_id": user.id,
        "stripe_subscription_id": subscription["id"],
        "stripe_customer_id": stripe_id(subscription.get("customer")),
        "tier": tier,
        "status": subscription["status"],
        "current_period_start": _time(item.get("current_period_start")),
        "current_period_end": _time(item.get("current_period_end")),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "trial_end": _time(subscription.get("trial_end")),
        "last_event_at": _time(event_created),
    }
    db.session.execute(
        dialect_insert(Subscription)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["stripe_subscription_id"])
    )
    return lock_subscription(subscription["id"])


def _is_news(row: Subscription, status: str, created: datetime, *, deleted: bool = False) -> bool:
    """The ordering guard: may an event of time `created` moving to `status` apply?"""
    if deleted:
        return True  # deletion is final whenever it arrives
    if row.status in TERMINAL_STATUSES:
        return False  # nothing revives a canceled subscription
    if row.last_event_at is None or created > row.last_event_at:
        return True
    if created < row.last_event_at:
        return False
    return STATUS_PROGRESS.get(status, 2) >= STATUS_PROGRESS.get(row.status, 2)


def _copy_fields(row: Subscription, subscription: dict, status: str, tier: str | None) -> None:
    item = _first_item(subscription)
    row.status = status
    row.tier = tier or row.tier
    row.stripe_customer_id = stripe_id(subscription.get("customer")) or row.stripe_customer_id
    row.current_period_start = _time(item.get("current_period_start")) or row.current_period_start
    row.current_period_end = _time(item.get("current_period_end")) or row.current_period_end
    row.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    row.trial_end = _time(subscription.get("trial_end"))


def _paid_tier(tier_id) -> str | None:
    tier = current_catalog().tier(str(tier_id or ""))
    return tier.id if tier is not None and not tier.is_free else None


def _first_item(subscription: dict) -> dict:
    """API 2026-07-29.dahlia keeps the billing period on the subscription's items."""
    items = (subscription.get("items") or {}).get("data") or [{}]
    return items[0] or {}


def _subscription_line(invoice: dict) -> dict | None:
    lines = (invoice.get("lines") or {}).get("data") or []
    for line in lines:
        if (line.get("parent") or {}).get("type") == "subscription_item_details":
            return line
    return lines[0] if lines else None


def _time(unix) -> datetime | None:
    return datetime.fromtimestamp(int(unix), UTC) if unix else None


# --- one live subscription per customer -------------------------------------------------


def keep_one_live_subscription(order: Order) -> str | None:
    """A second subscription's first payment: cancel it at Stripe and refund it in full.

    Decided once per first payment, under the customer's lock, when its money is
    booked: the subscription whose payment was booked first stays; any later one
    is the duplicate. Its refund waits until the payment's charge is known (the
    first invoice), then goes through refunds with a fixed idempotency key, so a
    redelivered event never refunds twice. Returns what was done, or None.
    """
    if order.kind != "subscription" or not order.stripe_subscription_id:
        return None
    if order.failure_reason != invoices.DUPLICATE_SUBSCRIPTION:
        credits.lock_user(order.user_id)  # serialises two first payments of one customer
        kept = _other_kept_subscription(order)
        if kept is None:
            return None
        _mark_duplicate(order, kept)
    return _refund_duplicate(order)


def _other_kept_subscription(order: Order) -> Order | None:
    """The customer's earlier first payment of another subscription that is still live."""
    return db.session.execute(
        select(Order)
        .outerjoin(
            Subscription, Subscription.stripe_subscription_id == Order.stripe_subscription_id
        )
        .where(
            Order.user_id == order.user_id,
            Order.kind == "subscription",
            Order.id != order.id,
            Order.status.in_(("paid", "partially_refunded", "disputed")),
            Order.stripe_subscription_id.is_not(None),
            Order.stripe_subscription_id != order.stripe_subscription_id,
            or_(
                Order.failure_reason.is_(None),
                Order.failure_reason != invoices.DUPLICATE_SUBSCRIPTION,
            ),
            or_(Subscription.id.is_(None), Subscription.status.not_in(TERMINAL_STATUSES)),
        )
        .order_by(Order.paid_at, Order.id)
        .limit(1)
    ).scalar_one_or_none()


def _mark_duplicate(order: Order, kept: Order) -> None:
    tier = current_catalog().tier(kept.item_id)
    name = tier.name if tier else kept.item_id.title()
    order.failure_reason = invoices.DUPLICATE_SUBSCRIPTION
    order.customer_notice = f"You already had {name}; we refunded the second subscription."
    # The Stripe call sits in the webhook's transaction: its idempotency key makes a
    # retry after a rollback get the same answer, never a second cancellation.
    current_gateway().cancel_subscription(
        order.stripe_subscription_id, idempotency_key=f"cancel-duplicate-{order.id}"
    )
    audit.record(
        None,
        "subscription.duplicate_canceled",
        "order",
        order.id,
        {"subscription": order.stripe_subscription_id, "kept_order_id": kept.id},
    )


def _refund_duplicate(order: Order) -> str:
    from billing_site import refunds

    if not (order.payment_intent_id or order.charge_id):
        return "duplicate subscription canceled; refund waits for its invoice"
    if order.amount_refunded_cents >= order.amount_cents:
        return "duplicate subscription already refunded"
    refund = refunds.refund_in_transaction(
        order, key=f"refund-duplicate-{order.id}", note="second subscription refunded"
    )
    audit.record(
        None,
        "subscription.duplicate_refunded",
        "order",
        order.id,
        {"refund_id": refund.id, "amount_cents": refund.amount_cents},
    )
    return "duplicate subscription canceled and refunded"
