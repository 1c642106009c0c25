"""A real browser: sign up, see the pricing page, log out, log in."""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.browser


def test_a_visitor_signs_up_verifies_sees_pricing_logs_out_and_logs_back_in(app, live_server, page):
    # As under `make run`: the verification link is shown on the page (no mail offline).
    app.config["APP_ENV"] = "development"
    app.config["SITE_URL"] = live_server
    page.goto(f"{live_server}/pricing")
    page.get_by_role("link", name="Sign up").click()

    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    page.get_by_label("Confirm password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    page.get_by_role("link", name="verify this address").click()

    expect(page).to_have_url(re.compile(r"/pricing$"))
    expect(page.locator(".flash")).to_contain_text("Your email is verified")
    # The free credits are in the header on this very first page (issue 13, item 1).
    expect(page.locator("#balance-badge .badge-number")).to_have_text("10")
    expect(page.locator("#balance-badge")).not_to_have_class(re.compile("badge-empty"))
    expect(page.locator(".pack-card")).to_have_count(4)
    expect(page.locator(".tier-card")).to_have_count(3)
    expect(page.locator("#pack-pro")).to_contain_text("$20.00")
    expect(page.locator("#pack-pro")).to_contain_text("Most popular")
    expect(page.locator("#tier-basic")).to_contain_text("$9.99")
    expect(page.locator("#tier-premium")).to_contain_text("Unlimited")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)

    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(r"/pricing$"))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.locator("#balance-badge")).to_be_visible()


def test_a_wrong_password_is_explained_beside_the_field(live_server, page):
    page.goto(f"{live_server}/auth/login")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()

    expect(page.locator(".field-error")).to_have_text(
        "That email and password do not match an account."
    )


def test_the_pricing_cards_stack_on_a_phone(live_server, page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/pricing")

    starter = page.locator("#pack-starter").bounding_box()
    pro = page.locator("#pack-pro").bounding_box()

    assert pro["y"] > starter["y"] + starter["height"]
    assert starter["width"] <= 390
