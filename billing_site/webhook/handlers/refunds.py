"""Handlers for refund events (see billing_site.webhook.registry).

`charge.refunded` carries the charge's cumulative `amount_refunded`; the refund
events carry one refund, with the ids we put in its metadata. Both go through
billing_site.refunds, which applies each refund once under the order's lock.
"""

from billing_site import refunds
from billing_site.webhook.registry import handles


@handles("charge.refunded")
def charge_refunded(event: dict) -> str:
    charge = event["data"]["object"]
    return refunds.apply_charge_refunded(charge, stripe_event_id=event["id"])


@handles("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
def refund_changed(event: dict) -> str:
    refund = event["data"]["object"]
    return refunds.apply_refund_object(refund, stripe_event_id=event["id"])
