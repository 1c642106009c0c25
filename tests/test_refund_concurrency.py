"""Double-clicks and two admins (TESTING.md row 25): real parallel HTTP requests against the
live server, Stripe mocked in-process with `responses`."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses

from tests.admin_actions import (
    STRIPE_REFUNDS_URL,
    STRIPE_TEST_KEY,
    inside,
    order_state,
    paid_order,
    refund_callback,
)
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_user

PARALLEL = 20


@pytest.fixture
def app(make_app):
    # The live server serves this app: the real StripeGateway, over `responses`.
    return make_app(STRIPE_SECRET_KEY=STRIPE_TEST_KEY)


def logged_in_admin(live_server: str, app, email: str) -> requests.Session:
    """A browser-like session, logged in through the real log-in form."""
    with inside(app):
        make_user(email, is_admin=True)
    browser = requests.Session()
    token = csrf_token_from(browser.get(f"{live_server}/auth/login").text)
    answer = browser.post(
        f"{live_server}/auth/login",
        data={"email": email, "password": TEST_PASSWORD, "csrf_token": token},
        allow_redirects=False,
    )
    assert answer.status_code == 302
    return browser


def refund_form(browser: requests.Session, url: str) -> dict:
    html = browser.get(url).text
    token = re.search(r'name="refund_token" type="hidden" value="([^"]+)"', html).group(1)
    return {
        "csrf_token": csrf_token_from(html),
        "refund_token": token,
        "amount": "",
        "reason": "duplicate",
        "note": "",
    }


def post_in_parallel(browser: requests.Session, url: str, forms: list[dict]) -> list[int]:
    start = threading.Barrier(len(forms))

    def confirm(form: dict) -> int:
        start.wait()
        return browser.post(url, data=form, allow_redirects=False).status_code

    with ThreadPoolExecutor(max_workers=len(forms)) as pool:
        return list(pool.map(confirm, forms))


@pytest.mark.concurrency
def test_twenty_confirmations_of_one_form_make_one_stripe_refund(app, live_server):
    order_id, _ = paid_order(app, "pro")
    browser = logged_in_admin(live_server, app, "admin@example.com")
    order_url = f"{live_server}/admin/orders/{order_id}"
    form = refund_form(browser, order_url)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe:
        stripe.add_passthru(live_server)
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        statuses = post_in_parallel(browser, f"{order_url}/refund", [form] * PARALLEL)
        stripe_calls = len(stripe.calls)
    assert statuses == [303] * PARALLEL
    assert stripe_calls == 1
    state = order_state(app, order_id)
    assert state["refunds"] == [(1, "succeeded", 2000)]
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]


@pytest.mark.concurrency
def test_two_admins_refunding_one_order_at_once_never_refund_more_than_was_paid(app, live_server):
    order_id, _ = paid_order(app, "pro")  # $20.00
    order_url = f"{live_server}/admin/orders/{order_id}"
    admins = [logged_in_admin(live_server, app, f"admin{n}@example.com") for n in (1, 2)]
    # Each admin has their own form, and each asks for $15 of the $20.
    forms = [{**refund_form(admin, order_url), "amount": "15.00"} for admin in admins]
    start = threading.Barrier(2)

    def confirm(admin, form):
        start.wait()
        return admin.post(f"{order_url}/refund", data=form, allow_redirects=False).status_code

    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe:
        stripe.add_passthru(live_server)
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = sorted(pool.map(confirm, admins, forms))
        stripe_calls = len(stripe.calls)
    assert statuses == [303, 400]
    assert stripe_calls == 1
    state = order_state(app, order_id)
    assert state["amount_refunded_cents"] == 1500
    assert state["refunds"] == [(1, "succeeded", 1500)]
