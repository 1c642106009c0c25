"""The old JSON paths of checkout and orders (aliases of the API's), and the checkout rate limit."""

from datetime import datetime

import pytest
import responses
from sqlalchemy import select

from billing_site.models import Order
from tests.catalog_prices import STRIPE_PRICE_IDS
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_order, make_user


def csrf(client) -> str:
    return csrf_token_from(client.get("/auth/login").get_data(as_text=True))


def api_checkout(client, body, token=None):
    headers = {"X-CSRFToken": token or csrf(client)}
    return client.post("/api/v1/stripe/checkout", json=body, headers=headers)


@pytest.fixture
def customer(db, client):
    user = make_user()
    log_in(client, user)
    return user


def test_api_checkout_creates_a_session_and_answers_201(db, client, customer):
    response = api_checkout(client, {"package_id": "enterprise"})

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"session_id", "checkout_url", "expires_at", "payment_id"}
    assert body["checkout_url"] == f"http://localhost/dev/checkout/{body['session_id']}"
    assert body["expires_at"].endswith("Z")
    assert datetime.fromisoformat(body["expires_at"]).tzinfo is not None
    order = db.session.scalars(select(Order)).one()
    assert (order.item_id, order.status, order.amount_cents) == ("enterprise", "pending", 5000)
    assert order.checkout_session_id == body["session_id"]


def test_api_checkout_for_an_anonymous_caller_is_401_json(db, client):
    response = api_checkout(client, {"package_id": "pro"})

    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert db.session.scalars(select(Order)).all() == []


def test_api_checkout_for_an_unknown_package_is_404_json(db, client, customer):
    response = api_checkout(client, {"package_id": "diamond"})

    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_item"
    assert db.session.scalars(select(Order)).all() == []


@pytest.mark.parametrize("body", [{}, {"package_id": ""}, {"package_id": 7}, ["pro"]])
def test_api_checkout_without_a_package_id_is_422(db, client, customer, body):
    response = api_checkout(client, body)

    assert response.status_code == 422
    assert response.get_json()["error"] == "validation_error"


def test_api_checkout_without_the_csrf_header_is_refused(db, client, customer):
    response = client.post("/api/v1/stripe/checkout", json={"package_id": "pro"})

    assert response.status_code == 400
    assert response.get_json()["error"] == "csrf_failed"


def test_api_checkout_when_stripe_fails_is_502_json_and_the_order_failed(make_app):
    app = make_app(STRIPE_SECRET_KEY="sk_test_123", STRIPE_PRICE_IDS=STRIPE_PRICE_IDS)
    client = app.test_client()
    with app.app_context(), responses.RequestsMock() as stripe_api:
        log_in(client, make_user(stripe_customer_id="cus_test_1"))
        stripe_api.post(
            "https://api.stripe.com/v1/checkout/sessions",
            status=400,
            json={"error": {"type": "invalid_request_error", "message": "Bad currency"}},
        )

        response = api_checkout(client, {"package_id": "pro"})

        assert response.status_code == 502
        assert response.get_json()["error"] == "payment_provider_error"
        from billing_site.extensions import db

        assert db.session.scalars(select(Order.status)).all() == ["failed"]


def test_customer_reads_their_own_order(db, client, customer):
    order = make_order(customer, "pro")

    response = client.get(f"/api/v1/orders/{order.id}")

    assert response.status_code == 200
    body = response.get_json()
    assert body == client.get(f"/api/v1/payments/{order.id}").get_json()
    assert (body["id"], body["status"], body["kind"], body["credits"]) == (
        order.id,
        "pending",
        "pack",
        100,
    )
    assert body["amount"] == {"amount": 2000, "currency": "usd", "display": "$20.00"}
    assert body["item"] == {"id": "pro", "name": "Pro Pack"}
    assert (body["paid_at"], body["receipt_url"]) == (None, None)


def test_someone_elses_order_is_404(db, client, customer):
    order = make_order(make_user(), "pro")

    response = client.get(f"/api/v1/orders/{order.id}")

    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_order_api_for_an_anonymous_caller_is_401(db, client):
    order = make_order(make_user(), "pro")

    response = client.get(f"/api/v1/orders/{order.id}")

    assert response.status_code == 401


def test_starting_checkouts_is_rate_limited_per_customer(make_app):
    app = make_app(CHECKOUT_RATE_LIMIT="2 per minute")
    first, second = app.test_client(), app.test_client()
    with app.app_context():
        log_in(first, make_user())
        log_in(second, make_user())

    token = csrf(first)
    statuses = [
        first.post("/checkout/pack/pro", data={"csrf_token": token}).status_code,
        api_checkout(first, {"package_id": "pro"}, token).status_code,
        first.post("/checkout/pack/pro", data={"csrf_token": token}).status_code,
    ]
    other = second.post("/checkout/pack/pro", data={"csrf_token": csrf(second)})

    assert statuses == [303, 201, 429]
    assert other.status_code == 303  # another customer has their own budget
