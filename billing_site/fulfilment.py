"""From "Stripe says this Checkout Session is paid" to credits, exactly once.

The webhook handlers and the success page both come through here. Fulfilment is
keyed on the order behind the Checkout Session (locked FOR UPDATE), not on the
event id, so two different events about one session, or the success page racing
the webhook, grant once: whoever takes the lock first fulfils, the other finds
the order paid and does nothing. None of these functions commit; the caller
commits once.
"""

import contextlib
from datetime import timedelta

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from billing_site import books, credits
from billing_site.catalog import PACK_CREDIT_LIFETIME_DAYS
from billing_site.extensions import db, update_now
from billing_site.models import Order, StripeEvent, User, utcnow
from billing_site.stripe_gateway import stripe_id
from billing_site.webhook.registry import handler_for

PAID_STATUSES = ("paid", "no_payment_required")
# Events about a payment that may arrive before the order is paid, and are safe
# to apply again (payment_intent.payment_failed is not: it would fail a paid order).
EARLY_EVENT_TYPES = (
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)
# A "failed" order may still be fulfilled: payment_intent.payment_failed marks
# the order failed when one card is declined, yet the customer can pay with
# another card in the same Checkout Session, and a paid session is the final word.
FULFILLABLE_STATUSES = ("pending", "failed")


# Built once with bound parameters: building a select() costs about as much as
# running it, and the worker runs these for every paid checkout. The plain-column
# reads (on the table, not the entity) also skip the ORM's autoflush, so the
# changes a fulfilment makes are flushed once, at the commit.
_orders, _events = Order.__table__, StripeEvent.__table__
# Whether a refund or dispute about the session's payment came before it (see
# apply_events_that_came_early): asked with the order's lock, so the usual answer,
# none, costs no statement of its own.
EARLY_EVENTS_EXIST = (
    exists()
    .where(
        _events.c.payment_intent_id
        == func.coalesce(bindparam("payment_intent_id"), Order.payment_intent_id),
        _events.c.type.in_(EARLY_EVENT_TYPES),
    )
    .label("early_events_exist")
)
ORDER_OF_SESSION = (
    select(Order, EARLY_EVENTS_EXIST)
    .where(Order.checkout_session_id == bindparam("session_id"))
    .with_for_update(of=Order)
)
# The customer whose order the session is for, locked in one statement: the
# ledger's lock (credits.LOCK_USER_ROW), found through the order (not locked here).
LOCK_CUSTOMER_OF_SESSION = credits.LOCK_USER_ROW.where(
    User.id
    == select(_orders.c.user_id)
    .where(_orders.c.checkout_session_id == bindparam("session_id"))
    .scalar_subquery()
)
ORDER_OF_INVOICE = select(_orders.c.id).where(
    _orders.c.stripe_invoice_id == bindparam("invoice_id")
)
EARLY_EVENTS = (
    select(_events.c.id, _events.c.type, _events.c.payload)
    .where(
        _events.c.payment_intent_id == bindparam("payment_intent_id"),
        _events.c.type.in_(EARLY_EVENT_TYPES),
    )
    .order_by(_events.c.created, _events.c.id)
)


# Key in Session.info: {Checkout Session id: Order} fulfilled in this transaction. Kept
# (the session's identity map holds objects weakly), so what follows in the same
# transaction, the receipt, reads the order as fulfilment left it instead of again.
FULFILLED_ORDERS = "fulfilled_orders"


def order_fulfilled_in_this_transaction(session_id: str | None) -> Order | None:
    return db.session.info.get(FULFILLED_ORDERS, {}).get(session_id)


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_fulfilled_orders(session: Session, transaction) -> None:
    if transaction.parent is None:  # the database transaction's end, not a flush's
        session.info.pop(FULFILLED_ORDERS, None)


def lock_order_for_session(session: dict) -> Order | None:
    """The order this Checkout Session was made for, locked; None if it is not ours.

    Found by the session id; failing that (the session was created at Stripe but
    our write of its id was lost), by the order id in its metadata, provided the
    user matches and the order has no other session.
    """
    return _lock_order_and_ask_for_early_events(session)[0]


def _lock_order_and_ask_for_early_events(session: dict) -> tuple[Order | None, bool]:
    """lock_order_for_session(), and whether events about its payment may have come early
    (True when not known: the order was found by its metadata)."""
    found = db.session.execute(
        ORDER_OF_SESSION,
        {
            "session_id": session["id"],
            "payment_intent_id": stripe_id(session.get("payment_intent")),
        },
    ).first()
    if found is not None:
        return found.Order, found.early_events_exist
    return _lock_order_named_in_metadata(session), True


def _lock_order_named_in_metadata(session: dict) -> Order | None:
    metadata = session.get("metadata") or {}
    order_id, user_id = metadata.get("order_id"), metadata.get("user_id")
    if not (str(order_id or "").isdigit() and str(user_id or "").isdigit()):
        return None
    order = db.session.execute(
        select(Order)
        .where(
            Order.id == int(order_id),
            Order.user_id == int(user_id),
            Order.checkout_session_id.is_(None),
        )
        .with_for_update()
    ).scalar_one_or_none()
    if order is not None:
        order.checkout_session_id = session["id"]
    return order


def fulfil_checkout_session(session: dict, *, stripe_event_id: str | None = None) -> str:
    """Book what the session took and grant its credits, once, if it is what was expected.

    Returns the outcome. A currency or an amount Stripe reports that the order
    did not expect (and no discount explains) grants nothing: `needs_review`.
    """
    _lock_customer_of(session)  # customer first, then the order (subscriptions: LOCK ORDER)
    order, early_events_exist = _lock_order_and_ask_for_early_events(session)
    if order is None:
        return "unknown_order"
    _copy_session_ids(order, session)
    if order.status not in FULFILLABLE_STATUSES:
        return f"noop: order already {order.status}"
    if session.get("payment_status") not in PAID_STATUSES:
        return "awaiting_payment"
    totals = books.session_totals(session)
    problem = books.mismatch(order.expected_amount_cents, order.currency, totals)
    books.record_totals(order, totals)
    if problem:
        books.mark_needs_review(order, problem)
        return f"needs_review: {problem}"
    # Granted before the order changes, so the order's UPDATE waits for the
    # commit's single flush instead of being flushed early by the ledger's lock.
    if order.kind == "pack":
        grant_pack_credits(order, stripe_event_id=stripe_event_id)
    # A subscription's credits come with each paid invoice (invoice.paid), not here.
    mark_paid(order)
    if order.kind == "subscription":
        from billing_site.subscriptions import keep_one_live_subscription

        keep_one_live_subscription(order)
    applied = apply_events_that_came_early(order) if early_events_exist else 0
    update_now(order)  # the worker's hot path: one UPDATE, not a flush
    db.session.info.setdefault(FULFILLED_ORDERS, {})[session["id"]] = order
    return f"fulfilled; applied {applied} earlier event(s)" if applied else "fulfilled"


def _lock_customer_of(session: dict) -> None:
    """Lock whose order this session is for, before the order itself; failing that (no
    order has its id yet), the customer its metadata names."""
    found = credits.lock_user_found_by(LOCK_CUSTOMER_OF_SESSION, {"session_id": session["id"]})
    if found is not None:
        return
    metadata_user = str((session.get("metadata") or {}).get("user_id") or "")
    if metadata_user.isdigit() and len(metadata_user) < 19:
        # The ledger's own lock: the grant that follows finds the row already held. A
        # user id from metadata may name no customer of ours; then no order is found.
        with contextlib.suppress(NoResultFound):
            credits.lock_user(int(metadata_user))


def mark_paid(order: Order, paid_at=None) -> None:
    order.status = "paid"
    order.paid_at = paid_at or utcnow()
    order.failure_reason = None


def _copy_session_ids(order: Order, session: dict) -> None:
    order.payment_intent_id = stripe_id(session.get("payment_intent")) or order.payment_intent_id
    order.stripe_subscription_id = (
        stripe_id(session.get("subscription")) or order.stripe_subscription_id
    )
    order.stripe_customer_id = stripe_id(session.get("customer")) or order.stripe_customer_id
    # A subscription's first invoice may have booked it first, and an invoice names
    # its discounts only by id: the session is where the promotion code is.
    order.promotion_code = order.promotion_code or books.session_totals(session).promotion_code
    invoice_id = stripe_id(session.get("invoice"))
    if invoice_id and order.stripe_invoice_id is None and not _invoice_booked(invoice_id):
        order.stripe_invoice_id = invoice_id


def _invoice_booked(invoice_id: str) -> bool:
    return db.session.scalar(ORDER_OF_INVOICE, {"invoice_id": invoice_id}) is not None


def apply_events_that_came_early(order: Order) -> int:
    """Run again the refund and dispute events about this order's payment; return how many.

    Stripe delivers in any order: a refund made in the dashboard, or a dispute,
    can reach us before the Checkout Session's own event, while the order has
    no payment intent yet and nothing matches it. Now the payment is ours, so
    those events are applied; their handlers are idempotent, so an event that
    was applied before changes nothing.
    """
    if order.payment_intent_id is None:
        return 0
    # On the connection, not the session: the stored events are not what this
    # transaction changes, so the order and the grant need no flush to ask.
    events = (
        db.session.connection()
        .execute(EARLY_EVENTS, {"payment_intent_id": order.payment_intent_id})
        .all()
    )
    for event in events:
        handler_for(event.type)(event.payload)
    return len(events)


def grant_pack_credits(order: Order, *, stripe_event_id: str | None = None) -> None:
    credits.grant(
        order.user_id,
        order.credits,
        source="pack",
        source_ref=str(order.id),
        expires_at=utcnow() + timedelta(days=PACK_CREDIT_LIFETIME_DAYS),
        order_id=order.id,
        stripe_event_id=stripe_event_id,
        reference=f"order:{order.id}",
        note=f"{order.item_id} pack",
    )


def fail_checkout_session(session: dict, reason: str) -> str:
    """A delayed payment failed: the order is failed and nothing is granted."""
    order = lock_order_for_session(session)
    if order is None:
        return "unknown_order"
    if order.status != "pending":
        return f"noop: order already {order.status}"
    order.status = "failed"
    order.failure_reason = reason
    return "failed"


def expire_checkout_session(session: dict) -> str:
    """The customer never paid and Stripe expired the session."""
    order = lock_order_for_session(session)
    if order is None:
        return "unknown_order"
    if order.status != "pending":
        return f"noop: order already {order.status}"
    order.status = "expired"
    return "expired"
