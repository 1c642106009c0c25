"""What an admin does in the console, through its real pages and forms, for the admin tests.

Tests arrange rows inside `with app.app_context()` and then make requests with
no context pushed, so each request has its own session and its own current_user
(a shared app context would share both between requests).
"""

import re
from contextlib import contextmanager
from urllib.parse import parse_qs

from sqlalchemy import select

from billing_site.extensions import db
from billing_site.models import LedgerEntry, Order, Refund, User
from tests.conftest import csrf_token_from
from tests.factories import make_paid_order, make_user

STRIPE_REFUNDS_URL = "https://api.stripe.com/v1/refunds"
STRIPE_TEST_KEY = "sk_test_123"


@contextmanager
def inside(app):
    """An app context for arranging or checking rows; its session is removed after."""
    with app.app_context():
        yield db.session
        db.session.remove()


def log_in_as(client, user_id: int) -> None:
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True


def admin_client(app, email: str = "admin@example.com"):
    """A test client logged in as a new admin; returns (client, admin_id)."""
    with inside(app):
        admin_id = make_user(email, is_admin=True).id
    client = app.test_client()
    log_in_as(client, admin_id)
    return client, admin_id


def paid_order(app, item_id: str = "pro", email: str | None = None) -> tuple[int, int]:
    """A customer with a paid pack order (credits granted); returns (order_id, user_id)."""
    with inside(app):
        customer = make_user(email)
        order = make_paid_order(customer, item_id)
        return order.id, customer.id


def refund_form(client, order_id: int) -> dict:
    """The fields of the refund form as the order page renders it (fresh token)."""
    html = client.get(f"/admin/orders/{order_id}").get_data(as_text=True)
    token = re.search(r'name="refund_token" type="hidden" value="([^"]+)"', html)
    assert token, "the order page has no refund form"
    return {
        "csrf_token": csrf_token_from(html),
        "refund_token": token.group(1),
        "amount": "",
        "reason": "requested_by_customer",
        "note": "",
    }


def adjustment_form(html: str) -> dict:
    """The hidden fields of a customer page's credit adjustment form."""
    token = re.search(r'name="adjustment_token" type="hidden" value="([^"]+)"', html)
    assert token, "the customer page has no adjustment form"
    return {"csrf_token": csrf_token_from(html), "adjustment_token": token.group(1)}


def preview_refund(client, order_id: int, amount: str = "", *, htmx: bool = True, **fields):
    form = {**refund_form(client, order_id), "amount": amount, **fields}
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(f"/admin/orders/{order_id}/refund/preview", data=form, headers=headers)


def confirm_refund(client, order_id: int, amount: str = "", *, form: dict | None = None, **fields):
    form = {**(form or refund_form(client, order_id)), "amount": amount, **fields}
    return client.post(f"/admin/orders/{order_id}/refund", data=form)


def stripe_refund(request_body: str | bytes | None, *, status: str = "succeeded", refund_id=None):
    """The refund object Stripe answers a create-refund request with."""
    if isinstance(request_body, bytes):
        request_body = request_body.decode()
    params = {key: values[0] for key, values in parse_qs(request_body or "").items()}
    ours = params.get("metadata[refund_id]", "0")
    return {
        "id": refund_id or f"re_test_{ours}",
        "object": "refund",
        "amount": int(params.get("amount", 0)),
        "charge": params.get("charge"),
        "payment_intent": params.get("payment_intent"),
        "currency": "usd",
        "metadata": {
            "order_id": params.get("metadata[order_id]"),
            "refund_id": ours,
        },
        "reason": params.get("reason"),
        "status": status,
        "created": 1700000000,
    }


def refund_callback(status: str = "succeeded"):
    """A `responses` callback answering like Stripe's create-refund endpoint."""
    import json

    def answer(request):
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps(stripe_refund(request.body, status=status)),
        )

    return answer


def order_state(app, order_id: int) -> dict:
    """What the database says about an order, its refunds and its customer's balance."""
    with inside(app) as session:
        order = session.get(Order, order_id)
        user = session.get(User, order.user_id)
        refunds = session.scalars(
            select(Refund).where(Refund.order_id == order_id).order_by(Refund.sequence)
        )
        ledger = session.scalars(
            select(LedgerEntry).where(LedgerEntry.user_id == user.id).order_by(LedgerEntry.id)
        )
        return {
            "status": order.status,
            "amount_refunded_cents": order.amount_refunded_cents,
            "credits_clawed_back": order.credits_clawed_back,
            "balance": user.balance,
            "refunds": [(r.sequence, r.status, r.amount_cents) for r in refunds],
            "ledger": [(entry.kind, entry.delta) for entry in ledger],
        }
