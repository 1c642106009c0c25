"""A real browser on /account/api-keys: make a key (shown once), use it, revoke it."""

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD
from tests.factories import make_customer

pytestmark = pytest.mark.browser


def log_in(page, live_server, app, user_id):
    from billing_site.extensions import db
    from billing_site.models import User

    with app.app_context():
        email = db.session.get(User, user_id).email
    page.goto(f"{live_server}/auth/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_a_customer_makes_uses_and_revokes_a_key(app, live_server, page):
    user_id = make_customer(app)
    log_in(page, live_server, app, user_id)
    page.goto(f"{live_server}/account")
    # The saved cards arrive by HTMX once the page has loaded.
    expect(page.locator("#payment-methods")).to_contain_text("No saved cards")
    page.get_by_role("link", name="API keys").first.click()

    page.get_by_label("Name").fill("my agent")
    page.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-api-key code")
    expect(secret).to_have_text(re.compile(r"^pf_test_[A-Za-z0-9_-]{43}$"))
    key = secret.inner_text()
    headers = {"Authorization": f"Bearer {key}"}
    assert requests.get(f"{live_server}/api/v1/me", headers=headers, timeout=10).status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#api-key-table").get_by_role("button", name="Revoke").click()

    expect(page.locator("#api-key-table .pill-revoked")).to_have_text("revoked")
    expect(page.locator("#new-api-key")).to_have_count(0)  # shown once, gone now
    answer = requests.get(f"{live_server}/api/v1/me", headers=headers, timeout=10)
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_api_key")
