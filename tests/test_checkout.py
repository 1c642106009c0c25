"""Starting a Checkout against Stripe's API (mocked with `responses`, real StripeGateway)."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from sqlalchemy import func, select

from billing_site.models import CreditLot, Order, User
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_subscription, make_user
from tests.stripe_events import stripe_object

API = "https://api.stripe.com/v1"
CHECKOUT_URL = "https://checkout.stripe.com/c/pay/cs_test_from_stripe"


@pytest.fixture
def app(make_app):
    return make_app(STRIPE_SECRET_KEY="sk_test_123")


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def customer(db, client):
    user = make_user("buyer@example.com")
    log_in(client, user)
    return user


def stripe_creates_customer(stripe_api, customer_id="cus_test_new"):
    stripe_api.post(f"{API}/customers", json=stripe_object("customer", id=customer_id))


def stripe_creates_session(stripe_api, session_id="cs_test_from_stripe", **changes):
    session = stripe_object("checkout_session", id=session_id, url=CHECKOUT_URL, **changes)
    stripe_api.post(f"{API}/checkout/sessions", json=session)


def form_params(call) -> dict:
    """The form-encoded body Stripe received, one value per key."""
    return {key: values[0] for key, values in parse_qs(call.request.body).items()}


def post_with_token(client, path, **kwargs):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token}, **kwargs)


def orders(db) -> list[Order]:
    db.session.expire_all()
    return list(db.session.scalars(select(Order).order_by(Order.id)))


def lot_count(db) -> int:
    return db.session.scalar(select(func.count()).select_from(CreditLot))


def test_buying_a_pack_sends_stripe_the_catalog_price_and_redirects_to_checkout(
    db, client, customer, stripe_api
):
    stripe_creates_customer(stripe_api)
    stripe_creates_session(stripe_api)

    response = post_with_token(client, "/checkout/pack/pro")

    assert response.status_code == 303
    assert response.headers["Location"] == CHECKOUT_URL
    [order] = orders(db)
    assert (order.status, order.kind, order.item_id) == ("pending", "pack", "pro")
    assert (order.amount_cents, order.credits, order.currency) == (2000, 100, "usd")
    assert order.checkout_session_id == "cs_test_from_stripe"

    customer_call, session_call = stripe_api.calls
    assert customer_call.request.url == f"{API}/customers"
    assert form_params(customer_call)["email"] == "buyer@example.com"
    assert session_call.request.url == f"{API}/checkout/sessions"
    assert session_call.request.headers["Idempotency-Key"] == f"test-checkout-order-{order.id}"
    params = form_params(session_call)
    assert params["mode"] == "payment"
    assert params["line_items[0][price_data][unit_amount]"] == "2000"
    assert params["line_items[0][price_data][currency]"] == "usd"
    assert params["line_items[0][price_data][product_data][name]"] == "Pro Pack"
    assert params["line_items[0][quantity]"] == "1"
    assert params["metadata[order_id]"] == str(order.id)
    assert params["metadata[user_id]"] == str(customer.id)
    assert params["client_reference_id"] == str(customer.id)
    assert params["customer"] == "cus_test_new"
    assert params["success_url"] == (
        "http://localhost/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    )
    assert params["cancel_url"] == "http://localhost/checkout/cancel"
    assert params["allow_promotion_codes"] == "true"
    assert db.session.get(User, customer.id).stripe_customer_id == "cus_test_new"


def test_returning_customer_reuses_their_stripe_customer(db, client, stripe_api):
    user = make_user(stripe_customer_id="cus_test_known")
    log_in(client, user)
    stripe_creates_session(stripe_api)

    response = post_with_token(client, "/checkout/pack/starter")

    assert response.status_code == 303
    [session_call] = stripe_api.calls
    params = form_params(session_call)
    assert params["customer"] == "cus_test_known"
    assert params["line_items[0][price_data][unit_amount]"] == "500"


def test_subscribing_sends_a_monthly_recurring_price_with_the_order_in_its_metadata(
    db, client, customer, stripe_api
):
    stripe_creates_customer(stripe_api)
    stripe_creates_session(stripe_api, mode="subscription")

    response = post_with_token(client, "/checkout/plan/basic")

    assert response.status_code == 303
    assert response.headers["Location"] == CHECKOUT_URL
    [order] = orders(db)
    assert (order.kind, order.item_id, order.amount_cents, order.credits) == (
        "subscription",
        "basic",
        999,
        200,
    )
    params = form_params(stripe_api.calls[1])
    assert params["mode"] == "subscription"
    assert params["line_items[0][price_data][unit_amount]"] == "999"
    assert params["line_items[0][price_data][recurring][interval]"] == "month"
    assert params["subscription_data[metadata][order_id]"] == str(order.id)
    assert params["subscription_data[metadata][user_id]"] == str(customer.id)
    assert params["metadata[order_id]"] == str(order.id)
    assert (
        stripe_api.calls[1].request.headers["Idempotency-Key"] == f"test-checkout-order-{order.id}"
    )


def test_success_and_cancel_urls_come_from_configuration_not_the_request(make_app, stripe_api):
    app = make_app(STRIPE_SECRET_KEY="sk_test_123", SITE_URL="https://shop.example")
    client = app.test_client()
    with app.app_context():
        log_in(client, make_user())
    stripe_creates_customer(stripe_api)
    stripe_creates_session(stripe_api)

    # The request arrives at http://localhost; the URLs Stripe gets do not follow it.
    response = post_with_token(client, "/checkout/pack/pro")

    assert response.status_code == 303
    params = form_params(stripe_api.calls[1])
    assert params["success_url"] == (
        "https://shop.example/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    )
    assert params["cancel_url"] == "https://shop.example/checkout/cancel"


@pytest.mark.parametrize(
    "path", ["/checkout/pack/diamond", "/checkout/plan/gold", "/checkout/plan/free"]
)
def test_unknown_pack_or_plan_is_404_and_stripe_is_not_called(
    db, client, customer, stripe_api, path
):
    response = post_with_token(client, path)

    assert response.status_code == 404
    assert b"pricing page" in response.data
    assert len(stripe_api.calls) == 0
    assert orders(db) == []


def test_anonymous_buyer_is_sent_to_log_in_and_back_to_pricing(db, client, stripe_api):
    response = post_with_token(client, "/checkout/pack/pro")

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/auth/login"
    assert parse_qs(location.query) == {"next": ["/pricing"]}
    assert len(stripe_api.calls) == 0
    assert orders(db) == []


def test_buying_without_a_csrf_token_is_refused(db, client, customer, stripe_api):
    response = client.post("/checkout/pack/pro")

    assert response.status_code == 400
    assert len(stripe_api.calls) == 0


def test_stripe_500_shows_a_plain_message_fails_the_order_and_charges_nothing(
    db, client, customer, stripe_api
):
    stripe_creates_customer(stripe_api)
    for _ in range(3):  # the gateway tries three times (max_network_retries=2)
        stripe_api.post(
            f"{API}/checkout/sessions",
            status=500,
            json={"error": {"type": "api_error", "message": "Something went wrong"}},
        )

    response = post_with_token(client, "/checkout/pack/pro")

    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "payment provider is having trouble" in page
    assert "Nothing was charged" in page
    assert "Traceback" not in page
    [order] = orders(db)
    assert order.status == "failed"
    assert "payment provider" in order.failure_reason
    assert order.checkout_session_id is None
    session_calls = stripe_api.calls[1:]
    assert len(session_calls) == 3
    assert {call.request.headers["Idempotency-Key"] for call in session_calls} == {
        f"test-checkout-order-{order.id}"
    }
    assert db.session.get(User, customer.id).balance == 0
    assert lot_count(db) == 0


def test_stripe_timeout_shows_a_plain_message_and_a_retry_makes_a_new_order(
    db, client, customer, stripe_api
):
    stripe_creates_customer(stripe_api)
    for _ in range(3):
        stripe_api.post(f"{API}/checkout/sessions", body=requests.exceptions.ReadTimeout())

    failed = post_with_token(client, "/checkout/pack/pro")

    assert failed.status_code == 502
    assert "could not reach our payment provider" in failed.get_data(as_text=True)

    stripe_api.replace(
        responses.POST,
        f"{API}/checkout/sessions",
        json=stripe_object("checkout_session", id="cs_test_second_try", url=CHECKOUT_URL),
    )
    retried = post_with_token(client, "/checkout/pack/pro")

    assert retried.status_code == 303
    first, second = orders(db)
    assert (first.status, second.status) == ("failed", "pending")
    assert second.checkout_session_id == "cs_test_second_try"
    assert stripe_api.calls[-1].request.headers["Idempotency-Key"] == (
        f"test-checkout-order-{second.id}"
    )
    assert lot_count(db) == 0


def test_customer_with_a_live_subscription_is_sent_to_the_billing_portal(
    db, client, customer, stripe_api
):
    make_subscription(customer, "basic", stripe_customer_id="cus_test_subscribed")
    portal = stripe_object("billing_portal_session", url="https://billing.stripe.com/p/session/x")
    stripe_api.post(f"{API}/billing_portal/sessions", json=portal)

    response = post_with_token(client, "/checkout/plan/premium")

    assert response.status_code == 303
    assert response.headers["Location"] == "https://billing.stripe.com/p/session/x"
    [call] = stripe_api.calls
    params = form_params(call)
    assert params["customer"] == "cus_test_subscribed"
    assert params["return_url"].startswith("http://localhost/")
    assert orders(db) == []


def test_a_canceled_subscription_does_not_block_subscribing_again(db, client, customer, stripe_api):
    make_subscription(customer, "basic", status="canceled")
    stripe_creates_customer(stripe_api)
    stripe_creates_session(stripe_api, mode="subscription")

    response = post_with_token(client, "/checkout/plan/premium")

    assert response.status_code == 303
    assert response.headers["Location"] == CHECKOUT_URL
    assert form_params(stripe_api.calls[1])["line_items[0][price_data][unit_amount]"] == "2999"
