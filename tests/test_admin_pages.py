"""What an admin sees: the overview, finding orders and customers, an order's page, the audit."""

from datetime import timedelta

import pytest

from billing_site.extensions import db
from billing_site.models import Order, Refund, StripeEvent, utcnow
from tests.admin_actions import adjustment_form, admin_client, inside
from tests.factories import make_order, make_paid_order, make_subscription, make_user


@pytest.fixture
def shop(app):
    """Two customers with orders in several states."""
    with inside(app):
        ada = make_user("ada@example.com")
        bob = make_user("bob@example.com")
        paid = make_paid_order(ada, "pro")  # $20.00 today
        refunded = make_paid_order(bob, "starter")  # $5.00 today, refunded $2.00
        refunded.amount_refunded_cents = 200
        refunded.status = "partially_refunded"
        db.session.add(
            Refund(order_id=refunded.id, sequence=1, amount_cents=200, status="succeeded")
        )
        old = make_paid_order(bob, "enterprise")  # $50.00, 10 days ago
        old.paid_at = utcnow() - timedelta(days=10)
        old.created_at = utcnow() - timedelta(days=10)
        pending = make_order(ada, "basic", kind="subscription", stripe_subscription_id="sub_ada")
        make_subscription(bob, "basic", status="past_due")
        db.session.add(
            StripeEvent(
                id="evt_failed_1",
                type="invoice.paid",
                created=utcnow(),
                payload={"id": "evt_failed_1"},
                status="dead",
                error="boom",
            )
        )
        db.session.commit()
        return {
            "paid": paid.id,
            "refunded": refunded.id,
            "old": old.id,
            "pending": pending.id,
            "ada": ada.id,
            "bob": bob.id,
        }


def test_the_overview_shows_revenue_refunds_and_what_needs_attention(app, shop):
    client, _ = admin_client(app)
    html = client.get("/admin/").get_data(as_text=True)
    # Today: $20 + $5 paid, $2 refunded. 30 days: plus the $50 order.
    assert '<p class="stat-number" id="revenue-today">$23.00</p>' in html
    assert '<p class="stat-number" id="revenue-30-days">$73.00</p>' in html
    assert "3 paid orders" in html
    assert '<p class="stat-number" id="refunds-30-days">$2.00</p>' in html
    assert '<a href="/admin/events?status=dead">1</a>' in html
    assert '<p class="stat-number" id="past-due">1</p>' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ada@example", {"paid", "pending"}),
        ("BOB@EXAMPLE.COM", {"refunded", "old"}),
        ("sub_ada", {"pending"}),
    ],
)
def test_orders_are_found_by_email_and_stripe_ids(app, shop, query, expected):
    client, _ = admin_client(app)
    html = client.get("/admin/orders", query_string={"q": query}).get_data(as_text=True)
    found = {name for name in shop if f'href="/admin/orders/{shop.get(name)}"' in html}
    assert found & {"paid", "refunded", "old", "pending"} == expected


def test_orders_are_found_by_order_id_payment_intent_charge_and_session(app, shop):
    client, _ = admin_client(app)
    order_id = shop["old"]
    with inside(app) as session:
        order = session.get(Order, order_id)
        ids = [str(order_id), f"#{order_id}", order.payment_intent_id, order.charge_id]
        ids.append(order.checkout_session_id)
    for query in ids:
        html = client.get("/admin/orders", query_string={"q": query}).get_data(as_text=True)
        assert f'href="/admin/orders/{order_id}"' in html, query
        assert f'href="/admin/orders/{shop["paid"]}"' not in html, query


def test_orders_filter_by_status_kind_and_dates(app, shop):
    client, _ = admin_client(app)

    def found(**args):
        html = client.get("/admin/orders", query_string=args).get_data(as_text=True)
        return {
            name
            for name in ("paid", "refunded", "old", "pending")
            if f'href="/admin/orders/{shop[name]}"' in html
        }

    assert found(status="partially_refunded") == {"refunded"}
    assert found(kind="subscription") == {"pending"}
    today = utcnow().date()
    assert found(**{"from": (today - timedelta(days=1)).isoformat()}) == {
        "paid",
        "refunded",
        "pending",
    }
    assert found(to=(today - timedelta(days=2)).isoformat()) == {"old"}
    html = client.get("/admin/orders", query_string={"from": "yesterday"}).get_data(as_text=True)
    assert "is not a date like 2026-01-31; ignored." in html


def test_orders_paginate_with_htmx_fragments(app):
    with inside(app):
        customer = make_user("many@example.com")
        for _ in range(30):
            make_order(customer, "starter")
    client, _ = admin_client(app)
    page = client.get("/admin/orders")
    assert "HX-Request" in page.headers["Vary"]
    html = page.get_data(as_text=True)
    assert "Page 1 of 2 · 30 in all" in html
    assert 'hx-get="/admin/orders?page=2"' in html
    fragment = client.get("/admin/orders?page=2", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert body.lstrip().startswith('<section id="orders-results">')
    assert "<html" not in body
    assert "Page 2 of 2" in body
    assert body.count('href="/admin/orders/') == 5


def test_an_order_page_shows_the_customer_amounts_ids_ledger_and_refunds(app, shop):
    client, _ = admin_client(app)
    html = client.get(f"/admin/orders/{shop['refunded']}").get_data(as_text=True)
    assert "bob@example.com" in html
    assert f'href="/admin/users/{shop["bob"]}"' in html
    assert '<dd id="amount-refunded">$2.00</dd>' in html
    assert f"pi_test_order_{shop['refunded']}" in html
    assert f"ch_test_order_{shop['refunded']}" in html
    assert f"order:{shop['refunded']}" in html  # the ledger entry of its grant
    assert '<table class="table" id="refunds">' in html
    assert "still refundable <strong>$3.00</strong>" in html
    assert 'name="refund_token"' in html


def test_an_unknown_order_is_404(app):
    client, _ = admin_client(app)
    assert client.get("/admin/orders/999999").status_code == 404


def test_customers_are_found_by_email_and_show_balance_lots_orders_and_subscription(app, shop):
    client, _ = admin_client(app)
    html = client.get("/admin/users", query_string={"q": "bob@"}).get_data(as_text=True)
    assert f'href="/admin/users/{shop["bob"]}"' in html
    assert f'href="/admin/users/{shop["ada"]}"' not in html
    page = client.get(f"/admin/users/{shop['bob']}").get_data(as_text=True)
    assert '<span id="customer-balance">320</span>' in page  # 20 + 300 credits
    assert f'href="/admin/orders/{shop["old"]}"' in page
    assert "past due" in page
    assert "sub_test_" in page
    assert "Adjust credits" in page


def test_the_customer_ledger_pages_with_htmx(app):
    with inside(app):
        customer = make_user("busy@example.com")
        for _ in range(25):
            make_paid_order(customer, "starter")
        user_id = customer.id
    client, _ = admin_client(app)
    page = client.get(f"/admin/users/{user_id}").get_data(as_text=True)
    assert f'hx-get="/admin/users/{user_id}?ledger_page=2"' in page
    fragment = client.get(
        f"/admin/users/{user_id}?ledger_page=2", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert fragment.lstrip().startswith('<section class="card" id="customer-ledger">')
    assert fragment.count("<tr><td>") == 5


def test_the_audit_log_lists_admin_actions(app, shop):
    client, _ = admin_client(app, "boss@example.com")
    html = client.get(f"/admin/users/{shop['ada']}").get_data(as_text=True)
    client.post(
        f"/admin/users/{shop['ada']}/credits",
        data={**adjustment_form(html), "delta": "5", "reason": "goodwill"},
    )
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "boss@example.com" in audit
    assert "credits.adjust" in audit
    assert f'href="/admin/users/{shop["ada"]}"' in audit
    assert "goodwill" in audit
