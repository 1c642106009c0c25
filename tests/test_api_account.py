"""The rest of /api/v1 as a program uses it: catalog, me, generations and ledger pages,
the subscription (cancel, resume), the billing portal and saved cards."""

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import responses

from billing_site.extensions import db
from billing_site.models import User, utcnow
from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.factories import logged_in, make_customer, make_subscription, make_user
from tests.stripe_events import stripe_object

STRIPE = "https://api.stripe.com/v1"


@pytest.fixture
def stripe_app(make_app):
    return make_app(STRIPE_SECRET_KEY="sk_test_123")


def subscriber_key(app, *, cancel_at_period_end=False) -> tuple[str, object]:
    period_end = (utcnow() + timedelta(days=12)).replace(microsecond=0)
    with app.app_context():
        user = make_user(stripe_customer_id="cus_123")
        make_subscription(
            user,
            stripe_subscription_id="sub_123",
            stripe_customer_id="cus_123",
            current_period_end=period_end,
            cancel_at_period_end=cancel_at_period_end,
        )
        user_id = user.id
    return make_key(app, user_id), period_end


def stripe_subscription(cancel: bool, period_end) -> dict:
    end = int(period_end.timestamp())
    return {
        "id": "sub_123",
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": cancel,
        "items": {"object": "list", "data": [{"id": "si_1", "current_period_end": end}]},
    }


def test_the_catalog_has_packs_tiers_and_models_in_one_shape(client):
    body = client.get("/api/v1/catalog").json
    assert [m["id"] for m in body["models"]] == ["standard", "hd", "pro"]
    assert body["models"][1] == {"id": "hd", "name": "HD", "cost": 2}
    assert {t["id"]: t["allowance"] for t in body["tiers"]} == {
        "free": 10,
        "basic": 200,
        "premium": None,
    }
    assert body["packs"][0]["price"] == {"amount": 500, "currency": "usd", "display": "$5.00"}


def test_generations_and_ledger_come_in_keyset_pages(app, client):
    user_id = make_customer(app, balance=10)
    key = make_key(app, user_id)
    made = [
        client.post("/api/v1/generations", json={"prompt": f"cat {n}"}, headers=bearer(key)).json
        for n in range(5)
    ]

    first = client.get("/api/v1/generations?limit=2", headers=bearer(key)).json
    cursor = first["next_starting_after"]
    second = client.get(
        f"/api/v1/generations?limit=2&starting_after={cursor}", headers=bearer(key)
    ).json
    one = client.get(f"/api/v1/generations/{made[0]['id']}", headers=bearer(key)).json
    ledger = client.get("/api/v1/ledger?limit=3", headers=bearer(key)).json

    assert [g["prompt"] for g in first["data"]] == ["cat 4", "cat 3"]
    assert [g["prompt"] for g in second["data"]] == ["cat 2", "cat 1"]
    assert first["has_more"] and second["has_more"]
    assert one["image"].startswith("data:image/svg+xml;base64,")
    assert [e["kind"] for e in ledger["data"]] == ["spend", "spend", "spend"]
    assert [e["balance_after"] for e in ledger["data"]] == [15, 16, 17]
    assert_error_shape(client.get("/api/v1/ledger?limit=0", headers=bearer(key)), 422)
    other = make_key(app, make_customer(app))
    assert_error_shape(
        client.get(f"/api/v1/generations/{made[0]['id']}", headers=bearer(other)), 404
    )


def test_the_subscription_says_tier_allowance_and_period(app, client):
    key, period_end = subscriber_key(app)
    body = client.get("/api/v1/subscription", headers=bearer(key)).json
    assert body["tier"] == {"id": "basic", "name": "Basic"}
    assert (body["status"], body["allowance"], body["allowance_remaining"]) == ("active", 200, 200)
    assert body["current_period_end"] == period_end.isoformat().replace("+00:00", "Z")
    assert (body["cancel_at_period_end"], body["pending_change"]) == (False, None)


def test_a_free_customer_has_a_free_subscription_view(app, client):
    key = make_key(app, make_customer(app))
    body = client.get("/api/v1/subscription", headers=bearer(key)).json
    assert (body["status"], body["tier"]["id"], body["allowance"]) == ("free", "free", 10)
    cancel = client.delete("/api/v1/subscription?at_period_end=true", headers=bearer(key))
    assert_error_shape(cancel, 409, "no_subscription")


@responses.activate
def test_cancel_at_period_end_and_resume_ask_stripe(stripe_app):
    client = stripe_app.test_client()
    key, period_end = subscriber_key(stripe_app)
    responses.post(f"{STRIPE}/subscriptions/sub_123", json=stripe_subscription(True, period_end))

    refused = client.delete("/api/v1/subscription?at_period_end=false", headers=bearer(key))
    cancelled = client.delete("/api/v1/subscription?at_period_end=true", headers=bearer(key))

    assert_error_shape(refused, 422, "validation_error")
    assert cancelled.status_code == 202
    assert cancelled.json["cancel_at_period_end"] is True
    assert cancelled.json["pending_change"]["type"] == "cancel"
    assert parse_qs(responses.calls[0].request.body) == {"cancel_at_period_end": ["true"]}

    responses.post(f"{STRIPE}/subscriptions/sub_123", json=stripe_subscription(False, period_end))
    resumed = client.post("/api/v1/subscription/resume", headers=bearer(key))
    assert resumed.status_code == 202
    assert (resumed.json["cancel_at_period_end"], resumed.json["pending_change"]) == (False, None)


@responses.activate
def test_the_billing_portal_link(stripe_app):
    client = stripe_app.test_client()
    key, _ = subscriber_key(stripe_app)
    responses.post(
        f"{STRIPE}/billing_portal/sessions",
        json=stripe_object("billing_portal_session", url="https://billing.stripe.com/p/session_1"),
    )
    response = client.post("/api/v1/billing-portal", headers=bearer(key))
    assert (response.status_code, response.json) == (
        201,
        {"url": "https://billing.stripe.com/p/session_1"},
    )
    assert parse_qs(responses.calls[0].request.body)["return_url"] == ["http://localhost/account"]


@responses.activate
def test_saved_cards_come_from_stripe_with_the_default_marked(stripe_app):
    client = stripe_app.test_client()
    key, _ = subscriber_key(stripe_app)
    visa = stripe_object("payment_method", id="pm_visa", customer="cus_123")
    amex = stripe_object("payment_method", id="pm_amex", customer="cus_123")
    amex["card"] = {
        **amex["card"],
        "brand": "amex",
        "display_brand": "american_express",
        "last4": "0005",
    }
    responses.get(
        f"{STRIPE}/payment_methods",
        json={
            "object": "list",
            "data": [visa, amex],
            "has_more": False,
            "url": "/v1/payment_methods",
        },
    )
    customer = stripe_object("customer", id="cus_123")
    customer["invoice_settings"] = {
        **customer["invoice_settings"],
        "default_payment_method": "pm_amex",
    }
    responses.get(f"{STRIPE}/customers/cus_123", json=customer)

    body = client.get("/api/v1/payment-methods", headers=bearer(key)).json

    assert body == {
        "data": [
            {
                "id": "pm_visa",
                "brand": "visa",
                "last4": "4242",
                "exp_month": 8,
                "exp_year": 2030,
                "default": False,
            },
            {
                "id": "pm_amex",
                "brand": "american_express",
                "last4": "0005",
                "exp_month": 8,
                "exp_year": 2030,
                "default": True,
            },
        ]
    }
    assert "customer=cus_123" in responses.calls[0].request.url
    assert "type=card" in responses.calls[0].request.url


@responses.activate
def test_the_account_page_shows_the_saved_cards(stripe_app):
    client = stripe_app.test_client()
    with stripe_app.app_context():
        user_id = make_user(stripe_customer_id="cus_123").id
    logged_in(client, stripe_app, user_id)
    responses.get(
        f"{STRIPE}/payment_methods",
        json={"object": "list", "data": [stripe_object("payment_method")], "has_more": False},
    )
    responses.get(f"{STRIPE}/customers/cus_123", json=stripe_object("customer", id="cus_123"))

    dashboard = client.get("/account").get_data(as_text=True)
    cards = client.get("/account/payment-methods", headers={"HX-Request": "true"})

    assert 'hx-get="/account/payment-methods"' in dashboard
    assert cards.status_code == 200
    assert "Visa ending 4242, expires 08/2030" in cards.get_data(as_text=True)


def test_no_cards_before_the_first_purchase_and_stripe_is_not_asked(app, client):
    key = make_key(app, make_customer(app))
    assert client.get("/api/v1/payment-methods", headers=bearer(key)).json == {"data": []}


def test_me_says_who_the_key_belongs_to(app, client):
    user_id = make_customer(app, tier="premium")
    with app.app_context():
        email = db.session.get(User, user_id).email
    body = client.get("/api/v1/me", headers=bearer(make_key(app, user_id))).json
    assert (body["email"], body["plan"]["id"], body["unlimited"]) == (email, "premium", True)
    assert body["created_at"].endswith("Z")
