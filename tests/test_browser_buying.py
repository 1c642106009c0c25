"""A new customer buys the Pro Pack in a real browser, through the local test checkout."""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD


@pytest.fixture
def site(app, live_server):
    """The live server, with the site's own URL pointing at it (success and cancel URLs)."""
    app.config["SITE_URL"] = live_server
    # As under `make run`: the verification link is shown on the page (no mail offline).
    app.config["APP_ENV"] = "development"
    return live_server


def sign_up(page, site, email="buyer@example.com"):
    page.goto(f"{site}/auth/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    page.get_by_label("Confirm password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    page.get_by_role("link", name="verify this address").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


@pytest.mark.browser
def test_a_new_customer_buys_the_pro_pack_and_sees_100_more_credits(site, page):
    sign_up(page, site)

    page.goto(f"{site}/pricing")
    page.locator("#pack-pro").get_by_role("button", name="Buy").click()

    expect(page.locator("#test-checkout-banner")).to_have_text("TEST CHECKOUT — no real payment")
    expect(page.locator("#test-checkout")).to_contain_text("Pro Pack")
    expect(page.locator("#test-checkout")).to_contain_text("$20.00")
    page.get_by_role("button", name="Pay $20.00").click()

    expect(page).to_have_url(
        re.compile(re.escape(site) + r"/checkout/success\?session_id=cs_test_\w+")
    )
    expect(page.locator("#checkout-status")).to_contain_text("Payment received — 100 credits added")
    # The 10 free credits of the verified account, plus the pack's 100.
    expect(page.locator("#balance-badge .badge-number")).to_have_text("110")

    page.goto(f"{site}/account")
    pack_row = page.locator(".lots-table tr", has_text="Credit pack")
    expect(pack_row).to_contain_text("100 / 100")


@pytest.mark.browser
def test_cancelling_the_test_checkout_says_nothing_was_charged(site, page):
    sign_up(page, site, "undecided@example.com")

    page.goto(f"{site}/pricing")
    page.locator("#pack-starter").get_by_role("button", name="Buy").click()
    page.get_by_role("link", name="Cancel").click()

    expect(page).to_have_url(f"{site}/checkout/cancel")
    expect(page.locator("#checkout-cancelled")).to_contain_text("Nothing was charged")


@pytest.mark.browser
def test_the_processing_page_updates_itself_when_the_payment_arrives(app, site, page):
    sign_up(page, site, "patient@example.com")
    page.goto(f"{site}/pricing")
    page.locator("#pack-pro").get_by_role("button", name="Buy").click()
    session_id = page.url.rsplit("/", 1)[-1]

    # Back from Checkout before the payment is confirmed.
    page.goto(f"{site}/checkout/success?session_id={session_id}")
    expect(page.locator("#checkout-status")).to_contain_text("Processing your payment…")

    app.extensions["stripe_gateway"].pay_checkout_session(session_id, deliver=False)

    expect(page.locator("#checkout-status")).to_contain_text(
        "Payment received — 100 credits added", timeout=10_000
    )
    # The 10 free credits of the verified account, plus the pack's 100.
    expect(page.locator("#balance-badge .badge-number")).to_have_text("110")
