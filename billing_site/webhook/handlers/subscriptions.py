"""Subscription and invoice events (see billing_site.webhook.registry).

The rules (ordering guard, terminal cancel, one grant per invoice) live in
billing_site.subscriptions; these only pick the object out of the event.
"""

from billing_site import subscriptions
from billing_site.webhook.registry import handles


@handles(
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.trial_will_end",
)
def subscription_changed(event: dict) -> str:
    # trial_will_end carries the whole subscription too: upserting it records trial_end.
    return subscriptions.apply_subscription(event["data"]["object"], event["created"])


@handles("customer.subscription.deleted")
def subscription_deleted(event: dict) -> str:
    # The customer is back on the free tier: nothing live remains for them.
    return subscriptions.apply_subscription(event["data"]["object"], event["created"], deleted=True)


@handles("invoice.paid")
def invoice_paid(event: dict) -> str:
    return subscriptions.renew_from_invoice(event["data"]["object"], event["created"], event["id"])


@handles("invoice.payment_failed")
def invoice_payment_failed(event: dict) -> str:
    return subscriptions.mark_past_due(event["data"]["object"], event["created"])
