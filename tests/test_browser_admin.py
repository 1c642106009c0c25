"""A real browser: an admin finds an order by the customer's email, previews a partial
refund, confirms it, and sees the customer's balance go down (local Stripe stand-in)."""

import re

import pytest
from playwright.sync_api import expect

from billing_site.extensions import db
from tests.admin_actions import inside, order_state
from tests.conftest import TEST_PASSWORD
from tests.factories import make_order, make_user

pytestmark = pytest.mark.browser


def bought_through_local_stripe(app, email: str) -> int:
    """A customer's Pro Pack, paid at the local Stripe, fulfilled by its signed webhook."""
    with inside(app):
        customer = make_user(email)
        order = make_order(customer, "pro")
        gateway = app.extensions["stripe_gateway"]
        session = gateway.create_checkout_session(
            {
                "mode": "payment",
                "success_url": "http://localhost/checkout/success",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": order.amount_cents,
                            "product_data": {"name": "Pro Pack"},
                        },
                        "quantity": 1,
                    }
                ],
                "metadata": {"order_id": str(order.id), "user_id": str(customer.id)},
            },
            idempotency_key=f"checkout-order-{order.id}",
        )
        order.checkout_session_id = session["id"]
        db.session.commit()
        gateway.pay_checkout_session(session["id"])
        return order.id


def test_an_admin_refunds_part_of_an_order_and_the_balance_goes_down(app, live_server, page):
    assert app.extensions["stripe_gateway"].is_local
    order_id = bought_through_local_stripe(app, "dana@example.com")
    assert order_state(app, order_id)["status"] == "paid"
    with inside(app):
        make_user("admin@example.com", is_admin=True)

    page.goto(f"{live_server}/admin/orders")
    expect(page).to_have_url(re.compile(r"/auth/login\?next="))
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/orders$"))

    page.get_by_label("Search").fill("dana@example.com")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"q=dana"))
    page.get_by_role("link", name=f"#{order_id}").click()

    expect(page.locator("h1")).to_contain_text(f"Order #{order_id}")
    expect(page.locator("#customer-balance")).to_have_text("100")
    page.get_by_label("Amount (USD)").fill("5.00")
    page.get_by_role("button", name="Preview refund").click()
    expect(page.locator("#preview-credits")).to_have_text("25")
    expect(page.locator("#preview-balance-after")).to_have_text("75")

    page.get_by_role("button", name="Confirm refund of $5.00").click()
    expect(page.locator(".flash")).to_contain_text("Refunded $5.00; 25 credits clawed back.")
    expect(page.locator("#customer-balance")).to_have_text("75")
    expect(page.locator("#refunds")).to_contain_text("succeeded")

    state = order_state(app, order_id)
    assert state["status"] == "partially_refunded"
    assert state["refunds"] == [(1, "succeeded", 500)]
    assert state["ledger"] == [("grant", 100), ("clawback", -25)]
