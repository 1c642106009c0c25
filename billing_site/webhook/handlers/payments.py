"""PaymentIntent events (see billing_site.webhook.registry).

Credits never come from here: a Checkout Session's events fulfil the order.
These record what the PaymentIntent adds: the charge id (which refunds and
disputes are matched by) and the reason a payment failed.
"""

from sqlalchemy import select

from billing_site import refunds
from billing_site.extensions import db
from billing_site.models import Order
from billing_site.stripe_gateway import stripe_id
from billing_site.webhook.registry import handles

DEFAULT_FAILURE_REASON = "The payment was declined."


@handles("payment_intent.succeeded")
def payment_succeeded(event: dict) -> str:
    intent = event["data"]["object"]
    order = _lock_order_for_intent(intent)
    if order is None:
        return "unknown_order"
    charge_id = stripe_id(intent.get("latest_charge"))
    if not charge_id or order.charge_id == charge_id:
        return "recorded"
    order.charge_id = charge_id
    order.payment_intent_id = order.payment_intent_id or intent["id"]
    return "recorded: charge id"


@handles("charge.succeeded")
def charge_succeeded(event: dict) -> str:
    """The charge's id and Stripe's receipt link, for the payment it belongs to."""
    charge = event["data"]["object"]
    order = refunds.lock_order_for_payment(charge.get("payment_intent"), charge.get("id"))
    if order is None:
        return "unknown_order"
    order.charge_id = order.charge_id or charge.get("id")
    order.receipt_url = charge.get("receipt_url") or order.receipt_url
    return "recorded: charge and receipt"


@handles("payment_intent.payment_failed")
def payment_failed(event: dict) -> str:
    intent = event["data"]["object"]
    order = _lock_order_for_intent(intent)
    if order is None:
        return "unknown_order"
    # Only a pending order fails: a late failure of an earlier attempt (the
    # customer then paid with another card) must not undo a paid order.
    if order.status != "pending":
        return f"noop: order already {order.status}"
    error = intent.get("last_payment_error") or {}
    order.status = "failed"
    order.failure_reason = error.get("message") or DEFAULT_FAILURE_REASON
    order.payment_intent_id = order.payment_intent_id or intent["id"]
    return "failed"


def _lock_order_for_intent(intent: dict) -> Order | None:
    """The order paid by this PaymentIntent, by its id or else by the metadata's order id."""
    order = db.session.execute(
        select(Order).where(Order.payment_intent_id == intent["id"]).with_for_update()
    ).scalar_one_or_none()
    if order is not None:
        return order
    metadata = intent.get("metadata") or {}
    order_id, user_id = str(metadata.get("order_id") or ""), str(metadata.get("user_id") or "")
    if not order_id.isdigit():
        return None
    statement = select(Order).where(Order.id == int(order_id)).with_for_update()
    if user_id.isdigit():
        statement = statement.where(Order.user_id == int(user_id))
    order = db.session.execute(statement).scalar_one_or_none()
    # An order already tied to another PaymentIntent is not this one's.
    if order is not None and order.payment_intent_id not in (None, intent["id"]):
        return None
    return order
