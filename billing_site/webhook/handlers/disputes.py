"""Handlers for dispute events (see billing_site.webhook.registry).

Each event carries the whole dispute, so one function applies any of them.
"""

from billing_site import disputes
from billing_site.webhook.registry import handles


@handles(
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)
def dispute_changed(event: dict) -> str:
    return disputes.apply_dispute(
        event["data"]["object"], stripe_event_id=event["id"], event_created=event.get("created")
    )
