"""Stripe-shaped objects and signed webhook deliveries for tests.

Objects start from Stripe's own examples in tests/fixtures/stripe/ (copied from
Stripe's OpenAPI fixtures, API version 2026-07-29.dahlia) and are varied per test.
"""

import contextvars
import copy
import itertools
import json
import time
from pathlib import Path

from flask import has_app_context

from billing_site import worker
from billing_site.extensions import db
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
    apply: bool = True,
):
    """Deliver `event` as Stripe would (raw JSON body, signed), then let the worker apply it.

    The webhook only stores the event; with `apply` the worker's own drain (the
    step `flask worker` runs) then applies everything due, in-process, so the
    test sees the result at once. Returns a Delivery: the webhook's answer, plus
    the outcome the worker reached for this event.
    """
    payload = json.dumps(event)
    headers = {"Stripe-Signature": signature_for(payload, secret, timestamp)}
    response = client.post(path, data=payload, headers=headers, content_type="application/json")
    applied = drain_inbox(client.application) if apply and response.status_code == 200 else []
    return Delivery(response, event["id"], applied)


def drain_inbox(app, now=None) -> list:
    """Run the worker's drain in a fresh app context (its own session), as a worker would.

    `now` moves the worker's clock, e.g. past a failed event's next_attempt_at.
    """

    def run():
        with app.app_context():
            return worker.drain(now)

    applied = contextvars.Context().run(run)
    if has_app_context():
        db.session.expire_all()  # the test re-reads what the worker committed
    return applied


class Delivery:
    """The webhook's answer to one delivery, and what the worker then did with the event."""

    def __init__(self, response, event_id: str, applied: list):
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers
        mine = [result for result in applied if result.event_id == event_id]
        answer = response.get_json(silent=True) or {}
        if mine:
            self.outcome = mine[-1].outcome
        elif answer.get("queued") is False:
            self.outcome = "duplicate"  # stored before: the webhook did not queue it again
        else:
            self.outcome = None
        self.applied_ok = bool(mine) and mine[-1].ok

    def get_json(self, **kwargs):
        answer = self.response.get_json(**kwargs)
        if isinstance(answer, dict) and self.outcome is not None:
            return {**answer, "outcome": self.outcome}
        return answer

    @property
    def json(self):
        return self.get_json()

    def get_data(self, **kwargs):
        return self.response.get_data(**kwargs)


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
