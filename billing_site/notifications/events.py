"""Emails that follow from a Stripe event, queued in the event's own transaction.

`after_event(event)` runs right after the event's handler succeeded, before
the commit (billing_site.webhook.services). It reads what the handler left in
the database (the order paid, the subscription past due, …), so it decides from
the site's state rather than from the event alone, and every message is keyed by
its cause: a redelivered event finds the message already queued and adds none.
"""

import logging

from sqlalchemy import bindparam, select

from billing_site import fulfilment
from billing_site.catalog import current_catalog
from billing_site.extensions import db, savepoint
from billing_site.models import Order, Subscription, utcnow
from billing_site.notifications import messages
from billing_site.subscriptions import subscription_id_of_invoice

log = logging.getLogger("billing_site.notifications")
PAID_ORDER_STATUSES = ("paid", "partially_refunded", "refunded", "disputed")


def after_event(event: dict) -> None:
    """Queue whatever emails this event's (already applied) changes call for.

    In a savepoint: an email that cannot be built is logged and dropped, and
    never undoes the payment the event applied.
    """
    follow_up = FOLLOW_UPS.get(event.get("type"))
    if follow_up is None:
        return
    # The event's own writes are flushed before the savepoint, not undone with it
    # (a flush that fails is the event's failure); follow-ups only read and queue
    # (an INSERT statement), which is what extensions.savepoint() asks of its block.
    db.session.flush()
    try:
        with savepoint():
            follow_up((event.get("data") or {}).get("object") or {})
    except Exception:
        log.exception("emails for event %s (%s) not queued", event.get("id"), event.get("type"))


ORDER_OF_SESSION = select(Order).where(Order.checkout_session_id == bindparam("session_id"))


def _checkout_paid(session: dict) -> None:
    # A subscription's first payment gets its receipt from its invoice (invoice.paid).
    order = fulfilment.order_fulfilled_in_this_transaction(session.get("id"))
    if order is None:  # paid before (a redelivery, a replay): read it as it stands
        order = db.session.execute(ORDER_OF_SESSION, {"session_id": session.get("id")}).scalar()
    if order is not None and order.kind == "pack" and order.status in PAID_ORDER_STATUSES:
        messages.pack_receipt(order)


def _invoice_paid(invoice: dict) -> None:
    subscription = _subscription_of(invoice)
    if subscription is None:
        return
    if int(invoice.get("amount_paid") or 0) > 0:  # a trial's $0 invoice is not a payment
        tier = current_catalog().tier(subscription.tier)
        messages.invoice_receipt(
            subscription.user, invoice, tier.name if tier else subscription.tier
        )
    messages.renewal_recovered(subscription, invoice)


def _invoice_failed(invoice: dict) -> None:
    subscription = _subscription_of(invoice)
    # Only a renewal: a failed first invoice leaves the subscription incomplete,
    # and the customer is still at Stripe Checkout to see it.
    if subscription is not None and subscription.status == "past_due":
        messages.renewal_failed(subscription, invoice)


def _trial_will_end(subscription_object: dict) -> None:
    subscription = _subscription(subscription_object.get("id"))
    if subscription is not None and subscription.status == "trialing":
        messages.trial_ending(subscription, utcnow())


def _subscription_of(invoice: dict) -> Subscription | None:
    return _subscription(subscription_id_of_invoice(invoice))


def _subscription(stripe_subscription_id: str | None) -> Subscription | None:
    if not stripe_subscription_id:
        return None
    return db.session.execute(
        select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    ).scalar_one_or_none()


FOLLOW_UPS = {
    "checkout.session.completed": _checkout_paid,
    "checkout.session.async_payment_succeeded": _checkout_paid,
    "invoice.paid": _invoice_paid,
    "invoice.payment_failed": _invoice_failed,
    "customer.subscription.trial_will_end": _trial_will_end,
}
