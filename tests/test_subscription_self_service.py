"""Self-service: the billing portal, and cancel/resume through HTMX, via Stripe's API.

Stripe is mocked with `responses` under the real StripeGateway; each test checks
the request Stripe would have received and what the customer sees.
"""

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import responses

from billing_site.extensions import db
from billing_site.models import Subscription, User, utcnow
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_subscription, make_user

STRIPE = "https://api.stripe.com/v1"


@pytest.fixture
def stripe_app(make_app):
    return make_app(STRIPE_SECRET_KEY="sk_test_123")


@pytest.fixture
def stripe_client(stripe_app):
    return stripe_app.test_client()


def subscriber(app, client, *, cancel_at_period_end=False, customer_id="cus_123"):
    period_end = (utcnow() + timedelta(days=12)).replace(microsecond=0)
    with app.app_context():
        user = make_user(stripe_customer_id=customer_id)
        make_subscription(
            user,
            stripe_subscription_id="sub_123",
            stripe_customer_id=customer_id,
            current_period_end=period_end,
            cancel_at_period_end=cancel_at_period_end,
        )
        log_in(client, db.session.get(User, user.id))
    return period_end


def stripe_subscription(cancel_at_period_end: bool, period_end) -> dict:
    end = int(period_end.timestamp())
    return {
        "id": "sub_123",
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": end if cancel_at_period_end else None,
        "items": {"object": "list", "data": [{"id": "si_1", "current_period_end": end}]},
    }


def htmx_post(client, path):
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    return client.post(path, headers={"HX-Request": "true", "X-CSRFToken": token})


def form_post(client, path):
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token})


def row(app) -> Subscription:
    with app.app_context():
        return db.session.query(Subscription).filter_by(stripe_subscription_id="sub_123").one()


# --- the portal ---------------------------------------------------------------------------


@responses.activate
def test_portal_redirects_to_stripes_billing_portal(stripe_app, stripe_client):
    subscriber(stripe_app, stripe_client)
    responses.post(
        f"{STRIPE}/billing_portal/sessions",
        json={
            "id": "bps_1",
            "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/abc",
        },
    )
    response = form_post(stripe_client, "/account/portal")
    assert response.status_code == 303
    assert response.headers["Location"] == "https://billing.stripe.com/p/session/abc"
    sent = parse_qs(responses.calls[0].request.body)
    assert sent["customer"] == ["cus_123"]
    assert sent["return_url"] == ["http://localhost/account"]


@responses.activate
def test_portal_without_a_stripe_customer_says_so_plainly(stripe_app, stripe_client):
    with stripe_app.app_context():
        log_in(stripe_client, make_user())
    response = form_post(stripe_client, "/account/portal")
    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    page = stripe_client.get("/account").get_data(as_text=True)
    assert "You have no billing account yet" in page
    assert len(responses.calls) == 0


@responses.activate
def test_portal_when_stripe_is_down_shows_a_plain_message(stripe_app, stripe_client):
    subscriber(stripe_app, stripe_client)
    responses.post(
        f"{STRIPE}/billing_portal/sessions", status=500, json={"error": {"message": "boom"}}
    )
    response = form_post(stripe_client, "/account/portal")
    assert response.headers["Location"] == "/account"
    page = stripe_client.get("/account").get_data(as_text=True)
    assert "Please try again in a minute" in page
    assert "boom" not in page


# --- cancel and resume --------------------------------------------------------------------


@responses.activate
def test_cancel_asks_stripe_to_cancel_at_period_end_and_updates_the_card(stripe_app, stripe_client):
    period_end = subscriber(stripe_app, stripe_client)
    responses.post(f"{STRIPE}/subscriptions/sub_123", json=stripe_subscription(True, period_end))
    response = htmx_post(stripe_client, "/account/subscription/cancel")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="subscription-card"')
    assert f"Cancels on {period_end:%-d %B %Y} — confirming with Stripe…" in html
    assert "Keep my plan" in html
    request = responses.calls[0].request
    assert parse_qs(request.body) == {"cancel_at_period_end": ["true"]}
    assert request.headers["Idempotency-Key"].startswith("test-subscription-sub_123-cancel-")
    # The row changes when Stripe's customer.subscription.updated arrives, not before.
    assert row(stripe_app).cancel_at_period_end is False


@responses.activate
def test_resume_asks_stripe_to_keep_the_subscription(stripe_app, stripe_client):
    period_end = subscriber(stripe_app, stripe_client, cancel_at_period_end=True)
    responses.post(f"{STRIPE}/subscriptions/sub_123", json=stripe_subscription(False, period_end))
    response = htmx_post(stripe_client, "/account/subscription/resume")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"Renews on {period_end:%-d %B %Y} — confirming with Stripe…" in html
    assert "Cancel plan" in html
    request = responses.calls[0].request
    assert parse_qs(request.body) == {"cancel_at_period_end": ["false"]}
    assert request.headers["Idempotency-Key"].startswith("test-subscription-sub_123-resume-")


@responses.activate
def test_each_press_gets_its_own_idempotency_key(stripe_app, stripe_client):
    period_end = subscriber(stripe_app, stripe_client)
    responses.post(f"{STRIPE}/subscriptions/sub_123", json=stripe_subscription(True, period_end))
    htmx_post(stripe_client, "/account/subscription/cancel")
    htmx_post(stripe_client, "/account/subscription/cancel")
    keys = {call.request.headers["Idempotency-Key"] for call in responses.calls}
    assert len(keys) == 2


@responses.activate
def test_stripe_refusing_the_change_leaves_everything_as_it_was(stripe_app, stripe_client):
    subscriber(stripe_app, stripe_client)
    responses.post(
        f"{STRIPE}/subscriptions/sub_123",
        status=400,
        json={
            "error": {"type": "invalid_request_error", "message": "No such subscription: 'sub_123'"}
        },
    )
    response = htmx_post(stripe_client, "/account/subscription/cancel")
    html = response.get_data(as_text=True)
    assert response.status_code == 502
    assert html.lstrip().startswith('<section id="subscription-card"')
    assert 'class="flash flash-danger"' in html
    assert "Renews on" in html and "confirming" not in html
    assert row(stripe_app).cancel_at_period_end is False


@responses.activate
def test_cancel_without_a_subscription_is_409(stripe_app, stripe_client):
    with stripe_app.app_context():
        log_in(stripe_client, make_user())
    response = htmx_post(stripe_client, "/account/subscription/cancel")
    assert response.status_code == 409
    assert "You have no subscription to change." in response.get_data(as_text=True)
    assert len(responses.calls) == 0


def test_cancel_without_csrf_token_is_refused(stripe_app, stripe_client):
    subscriber(stripe_app, stripe_client)
    response = stripe_client.post("/account/subscription/cancel", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert row(stripe_app).cancel_at_period_end is False
