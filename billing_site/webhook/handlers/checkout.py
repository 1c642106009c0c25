"""Checkout Session events (see billing_site.webhook.registry).

Fulfilment is keyed on the order behind the session (billing_site.fulfilment
locks it), so `completed` and `async_payment_succeeded` for one session, in
either order and any number of times, grant once.
"""

from billing_site import fulfilment
from billing_site.webhook.registry import handles

ASYNC_FAILURE_REASON = "Your payment did not go through (the bank declined the delayed payment)."


@handles("checkout.session.completed", "checkout.session.async_payment_succeeded")
def session_paid_or_completed(event: dict) -> str:
    # `completed` may carry payment_status "unpaid" for delayed methods: the
    # fulfilment then answers "awaiting_payment" and the async event finishes it.
    return fulfilment.fulfil_checkout_session(event["data"]["object"], stripe_event_id=event["id"])


@handles("checkout.session.async_payment_failed")
def session_payment_failed(event: dict) -> str:
    return fulfilment.fail_checkout_session(event["data"]["object"], ASYNC_FAILURE_REASON)


@handles("checkout.session.expired")
def session_expired(event: dict) -> str:
    return fulfilment.expire_checkout_session(event["data"]["object"])
