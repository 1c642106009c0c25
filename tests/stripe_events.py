"""Stripe-shaped objects and signed webhook deliveries for tests.

Objects start from Stripe's own examples in tests/fixtures/stripe/ (copied from
Stripe's OpenAPI fixtures, API version 2026-07-29.dahlia) and are varied per test.
"""

import copy
import itertools
import json
import time
from pathlib import Path

from billing_site.stripe_gateway import STRIPE_API_VERSION, sign_payload
from tests.conftest import TEST_WEBHOOK_SECRET

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
_event_numbers = itertools.count(1)


def stripe_object(name: str, **changes) -> dict:
    """A copy of the fixture `name` (e.g. "checkout_session") with top-level changes."""
    obj = copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))
    obj.update(changes)
    return obj


def make_event(
    event_type: str, obj: dict, *, event_id: str | None = None, created: int | None = None
) -> dict:
    """An event envelope (the fixture's shape) around `obj`."""
    event = stripe_object("event")
    event.update(
        id=event_id or f"evt_test_{next(_event_numbers):06d}_{int(time.time() * 1000)}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        data={"object": obj},
        api_version=STRIPE_API_VERSION,
        livemode=False,
    )
    return event


def signature_for(
    payload: str, secret: str = TEST_WEBHOOK_SECRET, timestamp: int | None = None
) -> str:
    return sign_payload(payload, secret, timestamp=timestamp)


def post_event(
    client,
    event: dict,
    *,
    secret: str = TEST_WEBHOOK_SECRET,
    timestamp: int | None = None,
    path: str = "/stripe/webhook",
):
    """Deliver `event` to the webhook as Stripe would: raw JSON body, signed."""
    payload = json.dumps(event)
    headers = {"Stripe-Signature": signature_for(payload, secret, timestamp)}
    return client.post(path, data=payload, headers=headers, content_type="application/json")


def checkout_session(order, *, payment_status: str = "paid", **changes) -> dict:
    """The Checkout Session Stripe would send for `order` (an Order row)."""
    mode = "payment" if order.kind == "pack" else "subscription"
    return stripe_object(
        "checkout_session",
        id=order.checkout_session_id,
        mode=mode,
        status="complete" if payment_status != "unpaid" else "open",
        payment_status=payment_status,
        amount_total=order.amount_cents,
        amount_subtotal=order.amount_cents,
        currency=order.currency,
        client_reference_id=str(order.user_id),
        metadata={"order_id": str(order.id), "user_id": str(order.user_id)},
        payment_intent=f"pi_for_order_{order.id}" if mode == "payment" else None,
        subscription=f"sub_for_order_{order.id}" if mode == "subscription" else None,
        **changes,
    )
