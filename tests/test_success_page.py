"""The success page after Checkout: fulfils a paid session once, for its own customer only.

Rows 13, 14 and 15 of the reliability matrix are here.
"""

import json
import threading

import pytest
import requests
import responses
from sqlalchemy import func, select

from billing_site.models import CreditLot, LedgerEntry, Order, StripeEvent, User
from billing_site.stripe_gateway import sign_payload
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.factories import log_in, make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event

API = "https://api.stripe.com/v1"


def count(db, model, *criteria) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def balance(db, user) -> int:
    db.session.expire_all()
    return db.session.get(User, user.id).balance


def success_page(client, session_id, **kwargs):
    return client.get(f"/checkout/success?session_id={session_id}", **kwargs)


# --- against Stripe's API (mocked), the real gateway -----------------------------------


@pytest.fixture
def stripe_app(make_app):
    return make_app(STRIPE_SECRET_KEY="sk_test_123")


@pytest.fixture
def stripe_db(stripe_app):
    from billing_site.extensions import db

    with stripe_app.app_context():
        yield db
        db.session.remove()


@pytest.fixture
def stripe_client(stripe_app):
    return stripe_app.test_client()


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def stripe_returns_session(stripe_api, order, payment_status="paid", **changes):
    session = checkout_session(order, payment_status=payment_status)
    session.update(changes)
    stripe_api.get(f"{API}/checkout/sessions/{order.checkout_session_id}", json=session)
    return session


def test_paid_session_grants_the_pack_once_even_when_reloaded(stripe_db, stripe_client, stripe_api):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "pro")
    log_in(client, user)
    stripe_returns_session(stripe_api, order)

    first = success_page(client, order.checkout_session_id)
    again = success_page(client, order.checkout_session_id)

    assert first.status_code == again.status_code == 200
    assert "Payment received — 100 credits added" in first.get_data(as_text=True)
    assert "Payment received — 100 credits added" in again.get_data(as_text=True)
    assert balance(db, user) == 100
    assert count(db, CreditLot, CreditLot.user_id == user.id) == 1
    assert count(db, LedgerEntry, LedgerEntry.kind == "grant") == 1
    assert db.session.get(Order, order.id).status == "paid"
    [call] = stripe_api.calls  # once paid, the page no longer needs to ask Stripe
    assert call.request.url == f"{API}/checkout/sessions/{order.checkout_session_id}"


def test_another_customers_session_is_404_and_grants_nothing(stripe_db, stripe_client, stripe_api):
    db, client = stripe_db, stripe_client
    owner, intruder = make_user(), make_user()
    order = make_order(owner, "ultimate")
    log_in(client, intruder)
    stripe_returns_session(stripe_api, order)

    response = success_page(client, order.checkout_session_id)

    assert response.status_code == 404
    assert balance(db, owner) == balance(db, intruder) == 0
    assert count(db, CreditLot) == 0
    assert db.session.get(Order, order.id).status == "pending"
    assert len(stripe_api.calls) == 0


@pytest.mark.parametrize("session_id", ["cs_test_forged", "", "../../v1/charges"])
def test_unknown_or_forged_session_id_is_404(stripe_db, stripe_client, stripe_api, session_id):
    db, client = stripe_db, stripe_client
    user = make_user()
    make_order(user, "pro")
    log_in(client, user)

    response = success_page(client, session_id)

    assert response.status_code == 404
    assert count(db, CreditLot) == 0
    assert len(stripe_api.calls) == 0


def test_session_whose_metadata_names_another_order_grants_nothing(
    stripe_db, stripe_client, stripe_api
):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "pro")
    log_in(client, user)
    stripe_returns_session(stripe_api, order, metadata={"order_id": "999", "user_id": "1"})

    response = success_page(client, order.checkout_session_id)

    assert response.status_code == 200
    assert "Processing your payment" in response.get_data(as_text=True)
    assert count(db, CreditLot) == 0


def test_unpaid_session_shows_processing_and_polls(stripe_db, stripe_client, stripe_api):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "pro")
    log_in(client, user)
    stripe_returns_session(stripe_api, order, payment_status="unpaid")

    response = success_page(client, order.checkout_session_id)

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Processing your payment…" in page
    assert 'hx-trigger="every 2s"' in page
    assert f'hx-get="/checkout/success?session_id={order.checkout_session_id}"' in page
    assert balance(db, user) == 0
    assert db.session.get(Order, order.id).status == "pending"


def test_poll_answers_a_fragment_that_stops_polling_once_paid(stripe_db, stripe_client, stripe_api):
    client = stripe_client
    user = make_user()
    order = make_order(user, "starter")
    log_in(client, user)
    stripe_returns_session(stripe_api, order)

    response = success_page(client, order.checkout_session_id, headers={"HX-Request": "true"})

    fragment = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert fragment.lstrip().startswith('<div id="checkout-status"')
    assert "<html" not in fragment
    assert "hx-trigger" not in fragment
    assert "Payment received — 20 credits added" in fragment
    # The balance in the navigation is refreshed out of band.
    assert 'id="balance-badge"' in fragment
    assert 'hx-swap-oob="true"' in fragment


def test_stripe_unreachable_shows_processing_and_grants_nothing(
    stripe_db, stripe_client, stripe_api
):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "pro")
    log_in(client, user)
    for _ in range(3):
        stripe_api.get(
            f"{API}/checkout/sessions/{order.checkout_session_id}",
            body=requests.exceptions.ConnectionError(),
        )

    response = success_page(client, order.checkout_session_id)

    assert response.status_code == 200
    assert "Processing your payment…" in response.get_data(as_text=True)
    assert count(db, CreditLot) == 0


def test_success_page_after_the_webhook_does_not_grant_again(stripe_db, stripe_client, stripe_api):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "pro")
    session = stripe_returns_session(stripe_api, order)
    assert post_event(client, make_event("checkout.session.completed", session)).status_code == 200
    log_in(client, user)

    response = success_page(client, order.checkout_session_id)

    assert "Payment received — 100 credits added" in response.get_data(as_text=True)
    assert balance(db, user) == 100
    assert count(db, CreditLot) == 1
    assert len(stripe_api.calls) == 0


def test_paid_subscription_says_subscription_active(stripe_db, stripe_client, stripe_api):
    db, client = stripe_db, stripe_client
    user = make_user()
    order = make_order(user, "basic", kind="subscription")
    log_in(client, user)
    stripe_returns_session(stripe_api, order)

    response = success_page(client, order.checkout_session_id)

    assert "Subscription active" in response.get_data(as_text=True)
    assert db.session.get(Order, order.id).status == "paid"
    # Monthly credits come with invoice.paid, not with the session.
    assert count(db, CreditLot) == 0


def test_anonymous_visitor_is_asked_to_log_in(stripe_db, stripe_client, stripe_api):
    order = make_order(make_user(), "pro")

    response = success_page(stripe_client, order.checkout_session_id)

    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]
    assert len(stripe_api.calls) == 0


def test_cancel_page_says_nothing_was_charged(client):
    response = client.get("/checkout/cancel")

    assert response.status_code == 200
    assert "Nothing was charged" in response.get_data(as_text=True)


# --- against the local gateway: the success page racing the webhook ------------------


def start_local_checkout(app, client, user, pack_id="pro") -> str:
    """Start a checkout through the site and pay it locally without any webhook yet."""
    log_in(client, user)
    token = _csrf(client)
    response = client.post(f"/checkout/pack/{pack_id}", data={"csrf_token": token})
    assert response.status_code == 303
    session_id = response.headers["Location"].rsplit("/", 1)[-1]
    return session_id


def _csrf(client) -> str:
    from tests.conftest import csrf_token_from

    return csrf_token_from(client.get("/pricing").get_data(as_text=True))


def session_cookie_for(app, user) -> str:
    """A signed Flask session cookie logging `user` in (for plain HTTP clients)."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.dumps({"_user_id": str(user.id), "_fresh": True})


def test_webhook_lost_success_page_grants_and_the_late_webhook_changes_nothing(app, db, client):
    user = make_user()
    session_id = start_local_checkout(app, client, user)
    gateway = app.extensions["stripe_gateway"]
    events = gateway.pay_checkout_session(session_id, deliver=False)

    response = success_page(client, session_id)

    assert "Payment received — 100 credits added" in response.get_data(as_text=True)
    assert balance(db, user) == 100

    late = post_event(client, next(e for e in events if e["type"] == "checkout.session.completed"))

    assert late.status_code == 200
    assert late.get_json()["outcome"] == "noop: order already paid"
    assert balance(db, user) == 100
    assert count(db, CreditLot) == 1
    assert count(db, LedgerEntry, LedgerEntry.kind == "grant") == 1


@pytest.mark.concurrency
def test_fifty_success_page_loads_racing_the_webhook_grant_once(app, db, client, live_server):
    # Fifty loads by one customer at once is the point here, not their rate limit.
    app.config["SUCCESS_PAGE_RATE_LIMIT"] = "100 per minute"
    user = make_user()
    session_id = start_local_checkout(app, client, user)
    events = app.extensions["stripe_gateway"].pay_checkout_session(session_id, deliver=False)
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    payload = json.dumps(completed)
    cookie = session_cookie_for(app, user)
    start = threading.Barrier(51)
    results: list[tuple[str, int, str]] = []

    def load_success_page():
        with requests.Session() as http:
            http.cookies.set("session", cookie, domain="127.0.0.1")
            start.wait()
            answer = http.get(f"{live_server}/checkout/success", params={"session_id": session_id})
            results.append(("page", answer.status_code, answer.text))

    def deliver_webhook():
        start.wait()
        answer = requests.post(
            f"{live_server}/stripe/webhook",
            data=payload,
            headers={
                "Stripe-Signature": sign_payload(payload, TEST_WEBHOOK_SECRET),
                "Content-Type": "application/json",
            },
        )
        results.append(("webhook", answer.status_code, answer.text))

    threads = [threading.Thread(target=load_success_page) for _ in range(50)]
    threads.append(threading.Thread(target=deliver_webhook))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 51
    assert {status for _, status, _ in results} == {200}
    pages = [text for kind, _, text in results if kind == "page"]
    assert all("Payment received — 100 credits added" in text for text in pages)
    assert balance(db, user) == 100
    assert count(db, CreditLot, CreditLot.user_id == user.id) == 1
    assert count(db, LedgerEntry, LedgerEntry.kind == "grant") == 1
    assert count(db, StripeEvent) == 1
