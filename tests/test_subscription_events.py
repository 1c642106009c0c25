"""Subscription and invoice events: rows 20-22 of the matrix, renewals and banners.

Events come in any order and more than once; state never moves backwards
because of an old event, and each invoice grants its period's credits once.
"""

import time

import pytest
import responses
from sqlalchemy import func, select

from billing_site import credits
from billing_site.extensions import db as _db
from billing_site.models import CreditLot, LedgerEntry, Order, Subscription, User
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event, stripe_object

DAY = 86400
TIER_PRICES = {"basic": 999, "premium": 2999}


def count(db, model, *criteria) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def subscription_row(db, stripe_subscription_id="sub_test_1") -> Subscription | None:
    db.session.expire_all()
    return db.session.execute(
        select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    ).scalar_one_or_none()


def deliver(client, event_type, obj, *, created=None, event_id=None):
    event = make_event(event_type, obj, created=created, event_id=event_id)
    response = post_event(client, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def subscription(
    user,
    *,
    status="active",
    tier="basic",
    sub_id="sub_test_1",
    period_start=None,
    metadata=None,
    **changes,
) -> dict:
    """A subscription as Stripe sends it (API 2026-07-29.dahlia: the period is on the item)."""
    start = period_start or int(time.time())
    fields = {
        "id": sub_id,
        "status": status,
        "customer": user.stripe_customer_id or "cus_unknown",
        "metadata": {"user_id": str(user.id), "tier": tier} if metadata is None else metadata,
        "cancel_at_period_end": False,
        "trial_end": None,
    }
    sub = stripe_object("subscription", **{**fields, **changes})
    item = sub["items"]["data"][0]
    item.update(
        current_period_start=start, current_period_end=start + 30 * DAY, subscription=sub_id
    )
    item["price"]["unit_amount"] = TIER_PRICES.get(tier, 0)
    return sub


def invoice(user, *, invoice_id, sub_id="sub_test_1", period_start=None, metadata=None) -> dict:
    """A paid subscription invoice: the subscription is at parent.subscription_details."""
    start = period_start or int(time.time())
    inv = stripe_object(
        "invoice",
        id=invoice_id,
        status="paid",
        customer=user.stripe_customer_id or "cus_unknown",
        billing_reason="subscription_cycle",
        amount_paid=999,
        amount_due=999,
        subtotal=999,
        total=999,
    )
    details_metadata = {"user_id": str(user.id), "tier": "basic"} if metadata is None else metadata
    inv["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": details_metadata, "subscription": sub_id},
    }
    line = inv["lines"]["data"][0]
    line["period"] = {"start": start, "end": start + 30 * DAY}
    line["parent"] = {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": sub_id,
            "subscription_item": "si_test_1",
        },
    }
    return inv


# --- 20: out of order -----------------------------------------------------------------


def test_updated_active_before_created_incomplete_ends_active(db, client):
    user = make_user()
    now = int(time.time())

    deliver(client, "customer.subscription.updated", subscription(user), created=now + 5)
    late = deliver(
        client,
        "customer.subscription.created",
        subscription(user, status="incomplete"),
        created=now,
    )

    assert late.startswith("noop: stale event")
    row = subscription_row(db)
    assert (row.status, row.tier, row.user_id) == ("active", "basic", user.id)


def test_created_incomplete_of_the_same_second_never_overwrites_active(db, client):
    user = make_user()
    now = int(time.time())

    deliver(client, "customer.subscription.updated", subscription(user), created=now)
    deliver(
        client,
        "customer.subscription.created",
        subscription(user, status="incomplete"),
        created=now,
    )

    assert subscription_row(db).status == "active"


def test_subscription_events_in_order_move_it_forward(db, client):
    user = make_user()
    now = int(time.time())
    sub = subscription(user, status="incomplete")

    deliver(client, "customer.subscription.created", sub, created=now)
    assert subscription_row(db).status == "incomplete"
    sub.update(status="active", cancel_at_period_end=True)
    deliver(client, "customer.subscription.updated", sub, created=now + 1)

    row = subscription_row(db)
    assert (row.status, row.cancel_at_period_end) == ("active", True)
    assert row.current_period_end.timestamp() == now + 30 * DAY


# --- 21: deleted is final ---------------------------------------------------------------


def test_stale_update_after_deleted_stays_canceled(db, client):
    user = make_user()
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription(user), created=now)
    deliver(
        client,
        "customer.subscription.deleted",
        subscription(user, status="canceled"),
        created=now + 20,
    )

    for created in (now + 10, now + 20):  # older, and of the same second
        outcome = deliver(
            client, "customer.subscription.updated", subscription(user), created=created
        )
        assert outcome.startswith("noop")

    assert subscription_row(db).status == "canceled"


def test_deleted_subscription_leaves_the_customer_on_the_free_tier(db, client):
    user = make_user()
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription(user), created=now)

    outcome = deliver(
        client,
        "customer.subscription.deleted",
        subscription(user, status="canceled"),
        created=now + 1,
    )

    assert outcome == "subscription canceled"
    row = subscription_row(db)
    assert row.status == "canceled"
    assert not row.is_live
    live = db.session.execute(
        select(Subscription).where(Subscription.user_id == user.id, Subscription.status == "active")
    ).all()
    assert live == []


def test_deleted_before_created_still_ends_canceled(db, client):
    user = make_user()
    now = int(time.time())
    deliver(
        client,
        "customer.subscription.deleted",
        subscription(user, status="canceled"),
        created=now + 5,
    )
    deliver(client, "customer.subscription.created", subscription(user), created=now)
    assert subscription_row(db).status == "canceled"


# --- 22: renewals -----------------------------------------------------------------------


def test_invoice_paid_three_times_before_the_checkout_event_grants_once(db, client):
    user = make_user(stripe_customer_id="cus_test_ada")
    order = make_order(user, "basic", kind="subscription")
    order_metadata = {"order_id": str(order.id), "user_id": str(user.id)}
    paid = invoice(user, invoice_id="in_first", metadata=order_metadata)

    outcomes = [
        deliver(client, "invoice.paid", paid),  # three different events …
        deliver(client, "invoice.paid", paid),
        deliver(client, "invoice.paid", paid, event_id="evt_retried_invoice"),
    ]
    retry = post_event(client, make_event("invoice.paid", paid, event_id="evt_retried_invoice"))

    assert outcomes[0] == "granted 200"
    assert all(o.startswith("noop: invoice already granted") for o in outcomes[1:])
    assert retry.get_json()["outcome"] == "duplicate"  # … and one delivered twice
    assert fresh(db, User, user.id).balance == 200
    assert count(db, CreditLot, CreditLot.source == "monthly") == 1
    row = subscription_row(db)
    assert (row.status, row.tier, row.user_id) == ("active", "basic", user.id)

    session = checkout_session(order)
    session["subscription"] = "sub_test_1"
    assert deliver(client, "checkout.session.completed", session) == "fulfilled"
    assert fresh(db, Order, order.id).status == "paid"
    assert fresh(db, User, user.id).balance == 200  # the checkout itself grants nothing


def test_next_periods_invoice_replaces_the_allowance_rather_than_adding(db, client):
    user = make_user()
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription(user), created=now)
    deliver(client, "invoice.paid", invoice(user, invoice_id="in_1", period_start=now))
    credits.spend(user.id, 50, reference="generation:test")
    _db.session.commit()
    assert fresh(db, User, user.id).balance == 150

    next_start = now + 30 * DAY
    outcome = deliver(
        client, "invoice.paid", invoice(user, invoice_id="in_2", period_start=next_start)
    )

    assert outcome == "granted 200"
    assert fresh(db, User, user.id).balance == 200  # not 350
    lots = {lot.source_ref: lot.credits_remaining for lot in db.session.scalars(select(CreditLot))}
    assert lots == {"in_1": 0, "in_2": 200}
    assert subscription_row(db).current_period_end.timestamp() == next_start + 30 * DAY
    retired = db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "expire")).all()
    assert [entry.delta for entry in retired] == [-150]


def test_unlimited_tier_invoice_grants_no_credits(db, client):
    user = make_user()
    deliver(client, "customer.subscription.created", subscription(user, tier="premium"))

    paid = invoice(user, invoice_id="in_premium")
    paid.update(amount_paid=2999, amount_due=2999, subtotal=2999, total=2999)
    outcome = deliver(client, "invoice.paid", paid)

    assert outcome == "no credits: premium tier"
    assert fresh(db, User, user.id).balance == 0
    assert count(db, CreditLot) == 0


def test_invoice_without_tier_metadata_asks_stripe_for_the_subscription(make_app):
    app = make_app(STRIPE_SECRET_KEY="sk_test_webhook_suite")
    with app.app_context(), responses.RequestsMock() as stripe_api:
        user = make_user(stripe_customer_id="cus_test_lookup")
        sub = subscription(user, sub_id="sub_from_api", metadata={})  # tier found by price
        stripe_api.get("https://api.stripe.com/v1/subscriptions/sub_from_api", json=sub)

        # invoice.paid does not include the invoice's payments: the site asks for them.
        stripe_api.get(
            "https://api.stripe.com/v1/invoice_payments",
            json={
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "invoice": "in_lookup",
                        "payment": {"type": "payment_intent", "payment_intent": "pi_lookup"},
                        "status": "paid",
                    }
                ],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
        )
        paid = invoice(user, invoice_id="in_lookup", sub_id="sub_from_api", metadata={})
        paid.pop("payments", None)
        outcome = deliver(app.test_client(), "invoice.paid", paid)

        assert outcome == "granted 200"
        assert len(stripe_api.calls) == 2
        assert "invoice=in_lookup" in stripe_api.calls[1].request.url
        booked = _db.session.scalars(select(Order).where(Order.stripe_invoice_id == "in_lookup"))
        assert booked.one().payment_intent_id == "pi_lookup"
        assert stripe_api.calls[0].request.headers["Authorization"] == (
            "Bearer sk_test_webhook_suite"
        )
        row = subscription_row(_db, "sub_from_api")
        assert (row.tier, row.user_id, row.status) == ("basic", user.id, "active")
        assert fresh(_db, User, user.id).balance == 200
        _db.session.remove()


def test_tier_comes_from_the_checkout_order_when_the_metadata_has_no_tier(db, client):
    user = make_user()
    order = make_order(user, "premium", kind="subscription")
    metadata = {"order_id": str(order.id), "user_id": str(user.id)}

    deliver(client, "customer.subscription.created", subscription(user, metadata=metadata))

    assert subscription_row(db).tier == "premium"


# --- failed renewals and trials --------------------------------------------------------


def test_failed_renewal_puts_the_subscription_past_due_and_payment_recovers_it(db, client):
    user = make_user()
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription(user), created=now)

    failed = deliver(
        client, "invoice.payment_failed", invoice(user, invoice_id="in_x"), created=now + 1
    )
    assert failed == "past_due"
    assert subscription_row(db).status == "past_due"
    assert fresh(db, User, user.id).balance == 0

    deliver(client, "invoice.paid", invoice(user, invoice_id="in_x"), created=now + 2)
    assert subscription_row(db).status == "active"
    assert fresh(db, User, user.id).balance == 200


def test_payment_failure_for_an_unknown_subscription_changes_nothing(db, client):
    user = make_user()
    outcome = deliver(client, "invoice.payment_failed", invoice(user, invoice_id="in_y"))
    assert outcome == "unknown_subscription"
    assert count(db, Subscription) == 0


def test_trial_will_end_is_recorded_with_its_end(db, client):
    user = make_user()
    trial_end = int(time.time()) + 3 * DAY
    sub = subscription(user, status="trialing", trial_end=trial_end)

    outcome = deliver(client, "customer.subscription.trial_will_end", sub)

    assert outcome == "subscription trialing"
    row = subscription_row(db)
    assert row.trial_end.timestamp() == trial_end


def test_subscription_of_an_unknown_customer_is_acknowledged_without_change(db, client):
    stranger = make_user()
    sub = subscription(stranger, metadata={"user_id": "999999"}, customer="cus_nobody")

    assert deliver(client, "customer.subscription.created", sub) == "unknown_user"
    assert count(db, Subscription) == 0


@pytest.mark.parametrize("tier", ["basic", "premium"])
def test_subscription_found_by_customer_id_when_metadata_is_missing(db, client, tier):
    user = make_user(stripe_customer_id=f"cus_by_id_{tier}")
    sub = subscription(user, tier=tier, metadata={})

    deliver(client, "customer.subscription.created", sub)

    row = subscription_row(db)
    assert (row.user_id, row.tier) == (user.id, tier)
