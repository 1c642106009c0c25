"""In a real browser: a Basic subscriber upgrades to Premium from the account page.

Everything Stripe does is played by the local stand-in and reaches the site as
signed webhooks: the subscription, the preview, the proration invoice.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def site(app, live_server):
    """The live server, with the site's own URL pointing at it (success and cancel URLs)."""
    app.config["SITE_URL"] = live_server
    # As under `make run`: the verification link is shown on the page (no mail offline).
    app.config["APP_ENV"] = "development"
    return live_server


def test_a_basic_subscriber_upgrades_to_premium_seeing_the_amount_then_unlimited_generations(
    site, page
):
    page.goto(f"{site}/auth/signup")
    page.get_by_label("Email").fill("upgrader@example.com")
    page.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    page.get_by_label("Confirm password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    page.get_by_role("link", name="verify this address").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.goto(f"{site}/pricing")
    page.locator("#tier-basic").get_by_role("button", name="Subscribe").click()
    page.get_by_role("button", name="Pay $9.99").click()
    expect(page).to_have_url(re.compile(re.escape(site) + r"/checkout/success"))

    page.goto(f"{site}/account")
    expect(page.locator("#plan-choice-basic")).to_contain_text("Current plan")
    page.locator("#plan-choice-premium").get_by_role("button", name="Upgrade").click()

    expect(page.locator("#amount-due")).to_have_text("$20.00")
    page.get_by_role("button", name="Pay $20.00 and upgrade").click()

    expect(page).to_have_url(f"{site}/account")
    expect(page.locator(".flashes")).to_contain_text("You are on Premium now.")
    expect(page.locator("#subscription-card .plan-name")).to_contain_text("Premium")
    expect(page.locator("#plan-choice-premium")).to_contain_text("Current plan")

    page.goto(f"{site}/generate")
    badge = page.locator("#balance-badge .badge-number")
    before = badge.inner_text()
    for number in range(1, 4):
        page.check("input[value=pro]")
        page.fill("#prompt", f"a premium castle, take {number}")
        page.click("#generator button[type=submit]")
        expect(page.locator("#generation-result img")).to_have_attribute(
            "alt", f"a premium castle, take {number}"
        )
        expect(page.locator("#generation-result figcaption")).to_contain_text(
            "included in your plan"
        )
    expect(badge).to_have_text(before)
