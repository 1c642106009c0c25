"""One live subscription per customer (issue 10.7, matrix row 43), on PostgreSQL with
real parallel deliveries and the local Stripe stand-in as the other side: two
subscriptions paid at once leave one live; the other is cancelled at Stripe and
its first payment refunded in full, once."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses
from sqlalchemy import func, select

from billing_site.checkout.services import start_plan_checkout
from billing_site.models import AuditLog, Order, Refund, Subscription, User
from billing_site.stripe_gateway import current_gateway
from tests.factories import log_in, make_user
from tests.stripe_events import drain_inbox, post_event, signature_for, stripe_object


def post(live_server: str, event: dict) -> int:
    payload = json.dumps(event)
    headers = {"Stripe-Signature": signature_for(payload), "Content-Type": "application/json"}
    return requests.post(f"{live_server}/stripe/webhook", data=payload, headers=headers).status_code


@pytest.mark.concurrency
def test_two_subscriptions_racing_to_active_leave_one_live_and_refund_the_other_once(
    db, live_server, app
):
    user = make_user("twice@example.com")
    gateway = current_gateway()
    with app.test_request_context():
        basic = start_plan_checkout(user, "basic").order
        premium = start_plan_checkout(user, "premium").order
    events = []
    for order in (basic, premium):
        events += gateway.pay_checkout_session(order.checkout_session_id, deliver=False)
    # Every event twice, all at once: Stripe retries, and two webhooks race.
    deliveries = events * 2
    start = threading.Barrier(len(deliveries))

    def deliver(event):
        start.wait(timeout=30)
        return post(live_server, event)

    with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
        statuses = list(pool.map(deliver, deliveries))

    assert statuses == [200] * len(deliveries)
    # The webhook only stored them; four workers now race to apply them.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: drain_inbox(app), range(4)))
    db.session.expire_all()
    orders = {o.id: o for o in db.session.scalars(select(Order).where(Order.user_id == user.id))}
    assert len(orders) == 2  # one payment per subscription, no more
    kept, refunded = sorted(orders.values(), key=lambda o: o.status != "paid")
    assert (kept.status, refunded.status) == ("paid", "refunded")
    assert refunded.amount_refunded_cents == refunded.amount_cents > 0
    kept_name = "Basic" if kept.item_id == "basic" else "Premium"
    assert refunded.customer_notice == (
        f"You already had {kept_name}; we refunded the second subscription."
    )
    # Stripe's side: one refund, of the second subscription's charge; it is cancelled.
    assert db.session.scalar(select(func.count()).select_from(Refund)) == 1
    stripe_subscriptions = gateway.list_subscriptions(customer_id=user.stripe_customer_id)
    statuses = {s["id"]: s["status"] for s in stripe_subscriptions}
    assert statuses == {
        kept.stripe_subscription_id: "active",
        refunded.stripe_subscription_id: "canceled",
    }
    with app.test_request_context():
        charges = [c for c in gateway._read()["charges"].values() if c["amount_refunded"]]
    assert [(c["amount_refunded"], c["payment_intent"]) for c in charges] == [
        (refunded.amount_cents, refunded.payment_intent_id)
    ]
    rows = {s.stripe_subscription_id: s.status for s in db.session.scalars(select(Subscription))}
    assert rows == statuses
    actions = db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
    assert actions.count("subscription.duplicate_canceled") == 1
    assert actions.count("subscription.duplicate_refunded") == 1
    # The kept plan's credits only (Premium is unlimited: nothing to count).
    expected_balance = 200 if kept.item_id == "basic" else 0
    assert db.session.get(User, user.id).balance == expected_balance
    client = app.test_client()
    log_in(client, user)
    page = client.get("/account/billing").get_data(as_text=True)
    assert "we refunded the second subscription" in page and "Refunded" in page


@pytest.mark.parametrize("checkouts_first", [True, False])
def test_the_second_subscription_is_refunded_once_whichever_event_books_it(
    db, client, app, checkouts_first
):
    user = make_user("second@example.com")
    gateway = current_gateway()
    with app.test_request_context():
        first = start_plan_checkout(user, "basic").order
        second = start_plan_checkout(user, "premium").order
    events = []
    for order in (first, second):
        events += gateway.pay_checkout_session(order.checkout_session_id, deliver=False)
    if checkouts_first:  # both Checkout Sessions before either invoice
        events.sort(key=lambda e: e["type"] != "checkout.session.completed")

    for event in events + events:
        assert post_event(client, event).status_code == 200

    db.session.expire_all()
    kept, refunded = db.session.get(Order, first.id), db.session.get(Order, second.id)
    assert (kept.status, refunded.status) == ("paid", "refunded")
    assert refunded.customer_notice == "You already had Basic; we refunded the second subscription."
    assert db.session.scalar(select(func.count()).select_from(Refund)) == 1
    rows = {s.stripe_subscription_id: s.status for s in db.session.scalars(select(Subscription))}
    assert rows == {
        kept.stripe_subscription_id: "active",
        refunded.stripe_subscription_id: "canceled",
    }
    assert db.session.get(User, user.id).balance == 200


@responses.activate
def test_the_stripe_gateway_cancels_a_subscription_now_with_its_idempotency_key(make_app):
    app = make_app(STRIPE_SECRET_KEY="sk_test_123")
    subscription = stripe_object("subscription", id="sub_dup", status="canceled")
    responses.delete("https://api.stripe.com/v1/subscriptions/sub_dup", json=subscription)
    with app.app_context():
        answer = current_gateway().cancel_subscription("sub_dup", idempotency_key="cancel-dup-7")

    assert answer["status"] == "canceled"
    (call,) = responses.calls
    assert call.request.method == "DELETE"
    assert call.request.headers["Idempotency-Key"].endswith("cancel-dup-7")  # installation prefix
