"""The stand-in's whole money loop for `make run`: codes, portal switches, dashboard refunds, disputes.

Each control changes the local Stripe state and reaches the site as signed webhooks.
"""

import re

import pytest
from sqlalchemy import select

from billing_site.models import Dispute, Order, Refund, Subscription
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user


def csrf(client, path="/auth/login") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def start(client, path: str) -> str:
    response = client.post(path, data={"csrf_token": csrf(client)})
    return response.headers["Location"].removeprefix("http://localhost")


def state(app) -> dict:
    with app.extensions["stripe_gateway"]._state() as data:
        return data


def fresh(db, model):
    db.session.expire_all()
    return db.session.scalars(select(model)).all()


def portal_path(client) -> str:
    response = client.post("/account/portal", data={"csrf_token": csrf(client, "/account")})
    return response.headers["Location"].removeprefix("http://localhost")


def press(client, portal: str, action_path: str):
    session_id = re.search(r"session=([\w]+)", portal).group(1)
    return client.post(
        f"{action_path}?session={session_id}", data={"csrf_token": csrf(client, portal)}
    )


@pytest.fixture
def customer(db, client):
    user = make_user("loop@example.com")
    log_in(client, user)
    return user


def test_test50_at_the_test_checkout_takes_half_off_in_stripes_shapes(app, db, client, customer):
    checkout = start(client, "/checkout/pack/pro")
    applied = client.post(
        f"{checkout}/promotion", data={"csrf_token": csrf(client, checkout), "code": "test50"}
    )
    assert applied.status_code == 303
    page = client.get(checkout).get_data(as_text=True)
    assert "Pay $10.00" in page and "Discount (TEST50)" in page

    session_id = checkout.rsplit("/", 1)[-1]
    session = app.extensions["stripe_gateway"].retrieve_checkout_session(session_id)
    assert (session["amount_subtotal"], session["amount_total"]) == (2000, 1000)
    assert session["total_details"]["amount_discount"] == 1000
    assert session["discounts"] == [
        {"coupon": "coupon_local_test50", "promotion_code": "promo_local_test50"}
    ]

    client.post(f"{checkout}/pay", data={"csrf_token": csrf(client, checkout)})

    [charge] = state(app)["charges"].values()
    assert charge["amount"] == 1000
    [order] = fresh(db, Order)
    assert order.status == "paid"


def test_free100_on_a_plan_makes_a_zero_first_invoice_with_no_charge(app, db, client, customer):
    checkout = start(client, "/checkout/plan/basic")
    client.post(
        f"{checkout}/promotion", data={"csrf_token": csrf(client, checkout), "code": "FREE100"}
    )
    client.post(f"{checkout}/pay", data={"csrf_token": csrf(client, checkout)})

    [invoice] = state(app)["invoices"].values()
    assert (invoice["subtotal"], invoice["total"], invoice["amount_paid"]) == (999, 0, 0)
    assert invoice["total_discount_amounts"][0]["amount"] == 999
    assert invoice["status"] == "paid" and invoice["payments"]["data"] == []
    assert state(app)["charges"] == {}
    [subscription] = fresh(db, Subscription)
    assert (subscription.tier, subscription.status) == ("basic", "active")


def test_an_unknown_code_is_refused_with_a_message_and_nothing_changes(app, client, customer):
    checkout = start(client, "/checkout/pack/pro")
    response = client.post(
        f"{checkout}/promotion", data={"csrf_token": csrf(client, checkout), "code": "NOPE"}
    )
    assert response.status_code == 422
    assert "This code is invalid." in response.get_data(as_text=True)
    assert "Pay $20.00" in response.get_data(as_text=True)


def test_the_portal_refunds_as_the_dashboard_would_and_opens_and_wins_a_dispute(
    app, db, client, customer
):
    checkout = start(client, "/checkout/plan/basic")
    client.post(f"{checkout}/pay", data={"csrf_token": csrf(client, checkout)})
    pack = start(client, "/checkout/pack/pro")
    client.post(f"{pack}/pay", data={"csrf_token": csrf(client, pack)})
    portal = portal_path(client)
    pack_order = next(o for o in fresh(db, Order) if o.kind == "pack")

    press(client, portal, f"/dev/portal/charges/{pack_order.charge_id}/refund-half")
    [refund] = fresh(db, Refund)
    assert refund.amount_cents == 1000 and refund.status == "succeeded"
    assert db.session.get(Order, pack_order.id).status == "partially_refunded"

    press(client, portal, f"/dev/portal/charges/{pack_order.charge_id}/dispute")
    [dispute] = fresh(db, Dispute)
    assert db.session.get(Order, pack_order.id).status == "disputed"
    press(client, portal, f"/dev/portal/disputes/{dispute.stripe_dispute_id}/win")
    assert fresh(db, Dispute)[0].status == "won"
    assert "Dispute of $10.00" in client.get(portal).get_data(as_text=True)


def test_the_portal_upgrade_is_prorated_and_changes_the_tier(app, db, client, customer):
    checkout = start(client, "/checkout/plan/basic")
    client.post(f"{checkout}/pay", data={"csrf_token": csrf(client, checkout)})
    portal = portal_path(client)
    [subscription] = fresh(db, Subscription)

    page = client.get(portal).get_data(as_text=True)
    assert "Upgrade to Premium now" in page
    press(
        client,
        portal,
        f"/dev/portal/subscriptions/{subscription.stripe_subscription_id}/switch/premium",
    )

    assert fresh(db, Subscription)[0].tier == "premium"
    reasons = sorted(i["billing_reason"] for i in state(app)["invoices"].values())
    assert reasons == ["subscription_create", "subscription_update"]
