"""The orders CSV export: what a finance person downloads from the admin orders page."""

import csv
import io
import re
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from billing_site.admin import order_export
from billing_site.extensions import db
from billing_site.models import AuditLog, Order, Refund, utcnow
from tests.admin_actions import admin_client, inside, log_in_as
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_order, make_paid_order, make_user

EXPORT_URL = "/admin/orders.csv"
HEADER = [
    "Order ID",
    "Created (UTC)",
    "Paid at (UTC)",
    "Customer email",
    "Kind",
    "Item",
    "Currency",
    "Amount",
    "Amount refunded",
    "Net amount",
    "Credits",
    "Credits clawed back",
    "Status",
    "Stripe checkout session",
    "Stripe payment intent",
    "Stripe charge",
    "Stripe subscription",
    "Stripe refunds",
    "Expected amount",
    "Discount",
    "Tax",
    "Promotion code",
    "Stripe invoice",
    "Stripe customer",
    "Period start (UTC)",
    "Period end (UTC)",
]


@pytest.fixture
def shop(app):
    """Two customers with orders in several states (the same shop as the admin page tests)."""
    with inside(app):
        ada = make_user("ada@example.com")
        bob = make_user("bob@example.com")
        paid = make_paid_order(ada, "pro")  # $20.00 today
        refunded = make_paid_order(bob, "starter")  # $5.00 today, refunded $2.00
        refunded.amount_refunded_cents = 200
        refunded.credits_clawed_back = 8
        refunded.status = "partially_refunded"
        db.session.add_all(
            [
                Refund(
                    order_id=refunded.id,
                    sequence=1,
                    amount_cents=150,
                    status="succeeded",
                    stripe_refund_id="re_first",
                ),
                Refund(
                    order_id=refunded.id,
                    sequence=2,
                    amount_cents=50,
                    status="succeeded",
                    stripe_refund_id="re_second",
                ),
            ]
        )
        old = make_paid_order(bob, "enterprise")  # $50.00, 10 days ago
        old.paid_at = utcnow() - timedelta(days=10)
        old.created_at = utcnow() - timedelta(days=10)
        pending = make_order(ada, "premium", kind="subscription", stripe_subscription_id="sub_ada")
        db.session.commit()
        return {"paid": paid.id, "refunded": refunded.id, "old": old.id, "pending": pending.id}


def export(client, **args):
    # Read to the end inside the request, as a server would (the test client runs each
    # request in a context of its own, which a lazily read stream would leave).
    return client.get(EXPORT_URL, query_string=args, buffered=True)


def rows_of(response) -> list[dict]:
    reader = csv.DictReader(io.StringIO(response.get_data(as_text=True), newline=""))
    assert reader.fieldnames == HEADER
    return list(reader)


def exported_ids(response) -> list[int]:
    return [int(row["Order ID"]) for row in rows_of(response)]


def listed_ids(client, **args) -> list[int]:
    html = client.get("/admin/orders", query_string=args).get_data(as_text=True)
    return [int(found) for found in re.findall(r'href="/admin/orders/(\d+)"', html)]


# --- the download ----------------------------------------------------------------------


def test_the_export_downloads_as_a_dated_utf8_csv_attachment(app, shop):
    client, _ = admin_client(app)
    response = export(client)
    assert response.status_code == 200
    assert "Content-Length" not in response.headers  # streamed: the size is not known up front
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    today = utcnow().date().isoformat()
    assert response.headers["Content-Disposition"] == f'attachment; filename="orders-{today}.csv"'
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    assert body.startswith("Order ID,Created (UTC),Paid at (UTC),Customer email,")
    assert body.endswith("\r\n")
    assert len(rows_of(response)) == 4


def test_the_orders_page_links_to_an_export_of_its_current_search_and_filters(app, shop):
    client, _ = admin_client(app)
    html = client.get(
        "/admin/orders", query_string={"q": "bob@", "status": "paid", "page": "1"}
    ).get_data(as_text=True)
    link = re.search(r'<a [^>]*id="export-orders" href="([^"]+)" download>Export CSV</a>', html)
    assert link, "the orders page has no Export CSV link"
    assert link.group(1).replace("&amp;", "&") == f"{EXPORT_URL}?q=bob@&status=paid"
    assert "all 1 matching order, not just this page" in html
    # The HTMX fragment a search swaps in carries the link for the new search.
    fragment = client.get(
        "/admin/orders", query_string={"kind": "subscription"}, headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert f'href="{EXPORT_URL}?kind=subscription" download>Export CSV</a>' in fragment


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"q": "bob@example.com"},
        {"q": "sub_ada"},
        {"status": "partially_refunded"},
        {"kind": "pack"},
        {"to": (utcnow().date() - timedelta(days=2)).isoformat()},
        {"from": (utcnow().date() - timedelta(days=1)).isoformat(), "kind": "pack"},
        {"q": "nobody@example.com"},
    ],
)
def test_the_export_holds_exactly_the_orders_the_filtered_list_shows(app, shop, args):
    client, _ = admin_client(app)
    assert exported_ids(export(client, **args)) == listed_ids(client, **args)


def test_the_export_holds_every_matching_order_not_just_the_first_page(app):
    with inside(app):
        customer = make_user("many@example.com")
        for _ in range(30):
            make_order(customer, "starter")
        make_order(make_user("other@example.com"), "starter")
    client, _ = admin_client(app)
    ids = exported_ids(export(client, q="many@"))
    assert len(ids) == 30
    assert len(listed_ids(client, q="many@")) == 25  # the page shows 25 of them
    assert ids == sorted(ids, reverse=True)


def test_the_export_reads_in_batches_and_skips_or_repeats_no_order(app, monkeypatch):
    """Batches continue after the last (created_at, id) read, even when orders share a time."""
    with inside(app):
        customer = make_user("batch@example.com")
        same_moment = utcnow() - timedelta(hours=1)
        orders = [make_order(customer, "starter") for _ in range(23)]
        for number, order in enumerate(orders):
            # Groups of five share a creation time, so batch edges fall inside a group.
            order.created_at = same_moment - timedelta(minutes=number // 5)
        db.session.commit()
        expected = [
            order.id for order in sorted(orders, key=lambda o: (o.created_at, o.id), reverse=True)
        ]
    monkeypatch.setattr(order_export, "BATCH_SIZE", 4)
    client, _ = admin_client(app)
    assert exported_ids(export(client)) == expected


def test_a_real_server_streams_the_export_to_a_logged_in_admin(app, live_server, monkeypatch):
    """Over real HTTP (a server thread, not the test client), in several batches."""
    with inside(app):
        make_user("boss@example.com", is_admin=True)
        customer = make_user("stream@example.com")
        expected = [make_order(customer, "starter").id for _ in range(12)][::-1]
    monkeypatch.setattr(order_export, "BATCH_SIZE", 5)
    browser = requests.Session()
    login_page = browser.get(f"{live_server}/auth/login", timeout=10).text
    logged_in = browser.post(
        f"{live_server}/auth/login",
        data={
            "email": "boss@example.com",
            "password": TEST_PASSWORD,
            "csrf_token": csrf_token_from(login_page),
        },
        timeout=10,
    )
    assert logged_in.ok
    with browser.get(f"{live_server}{EXPORT_URL}", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "Content-Length" not in response.headers
        body = b"".join(response.iter_content(chunk_size=None)).decode()
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [int(row["Order ID"]) for row in rows] == expected


# --- what is in a row --------------------------------------------------------------------


def test_amounts_are_in_major_units_with_their_currency_and_refunds_and_credits(app, shop):
    client, _ = admin_client(app)
    rows = {int(row["Order ID"]): row for row in rows_of(export(client))}
    refunded = rows[shop["refunded"]]
    assert refunded["Customer email"] == "bob@example.com"
    assert (refunded["Kind"], refunded["Item"], refunded["Status"]) == (
        "pack",
        "starter",
        "partially_refunded",
    )
    assert refunded["Currency"] == "USD"
    assert (refunded["Amount"], refunded["Amount refunded"], refunded["Net amount"]) == (
        "5.00",
        "2.00",
        "3.00",
    )
    assert (refunded["Credits"], refunded["Credits clawed back"]) == ("20", "8")
    assert refunded["Stripe payment intent"] == f"pi_test_order_{shop['refunded']}"
    assert refunded["Stripe charge"] == f"ch_test_order_{shop['refunded']}"
    assert refunded["Stripe checkout session"].startswith("cs_test_")
    assert refunded["Stripe refunds"] == "re_first re_second"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", refunded["Paid at (UTC)"])

    assert rows[shop["old"]]["Amount"] == "50.00"
    pending = rows[shop["pending"]]
    assert (pending["Amount"], pending["Amount refunded"]) == ("29.99", "0.00")
    assert pending["Credits"] == "unlimited"  # premium's monthly credits
    assert pending["Paid at (UTC)"] == ""
    assert pending["Stripe subscription"] == "sub_ada"
    assert pending["Status"] == "pending"


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (2000, "usd", "20.00"),
        (2999, "USD", "29.99"),
        (5, "eur", "0.05"),
        (123456789, "usd", "1234567.89"),
        (0, "usd", "0.00"),
        (500, "jpy", "500"),
        (1500, "kwd", "1.500"),
    ],
)
def test_minor_units_become_a_plain_decimal_in_the_currencys_own_unit(minor, currency, shown):
    assert order_export.major_units(minor, currency) == shown


# --- formula injection ---------------------------------------------------------------------

HOSTILE = {
    "equals": '=HYPERLINK("http://evil.example","click")@example.com',
    "plus": "+cmd|' /C calc'!A0@example.com",
    "minus": "-2+3+cmd|' /C calc'!A0@example.com",
    "at": "@SUM(1+9)*cmd|' /C calc'!A0@example.com",
    "tab": "\t=1+1@example.com",
}


def test_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(app):
    with inside(app):
        for name, email in HOSTILE.items():
            make_order(make_user(email), "starter", checkout_session_id=f"=cs_{name}")
        make_order(make_user("plain@example.com"), "starter", checkout_session_id="cs_plain")
    client, _ = admin_client(app)
    rows = rows_of(export(client))
    emails = {row["Customer email"] for row in rows}
    assert emails == {f"'{email}" for email in HOSTILE.values()} | {"plain@example.com"}
    sessions = {row["Stripe checkout session"] for row in rows}
    assert sessions == {f"'=cs_{name}" for name in HOSTILE} | {"cs_plain"}
    # Quotes and commas inside a cell stay inside it (the row still has every column).
    assert all(len(row) == len(HEADER) and None not in row for row in rows)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("ada@example.com", "ada@example.com"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
    ],
)
def test_only_text_starting_like_a_formula_gets_a_leading_apostrophe(text, shown):
    assert order_export.neutralise_formula(text) == shown


# --- who may export, and the audit ---------------------------------------------------------------


def test_a_customer_gets_403_and_a_visitor_the_log_in_page(app, shop):
    with inside(app):
        customer_id = make_user("customer@example.com").id
    customer = app.test_client()
    log_in_as(customer, customer_id)
    refused = export(customer)
    assert refused.status_code == 403
    assert "text/csv" not in refused.headers["Content-Type"]
    assert "bob@example.com" not in refused.get_data(as_text=True)

    visitor = export(app.test_client(), status="paid")
    assert visitor.status_code == 302
    assert visitor.headers["Location"].startswith("/auth/login?next=")
    with inside(app) as session:
        assert session.scalars(select(AuditLog)).all() == []


def test_each_export_is_written_to_the_audit_log_with_its_filters(app, shop):
    client, admin_id = admin_client(app, "finance@example.com")
    export(client, q="bob@", status="paid").get_data()
    export(client).get_data()
    with inside(app) as session:
        entries = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        assert [(e.admin_id, e.action, e.target_type) for e in entries] == [
            (admin_id, "orders.export", "orders"),
            (admin_id, "orders.export", "orders"),
        ]
        assert entries[0].details == {"q": "bob@", "status": "paid"}
        assert (entries[0].target_id, entries[1].target_id) == ("q=bob@&status=paid", "all")
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "finance@example.com" in audit
    assert 'href="/admin/orders?q=bob@&amp;status=paid">orders: q=bob@&amp;status=paid</a>' in (
        audit
    )


def test_a_bad_date_in_an_export_link_is_refused_with_400_and_nothing_exported(app, shop):
    client, _ = admin_client(app)
    response = export(client, **{"from": "yesterday"})
    assert response.status_code == 400
    assert "text/csv" not in response.headers["Content-Type"]
    assert "the From and To dates must look like 2026-01-31" in response.get_data(as_text=True)
    with inside(app) as session:
        assert session.scalars(select(AuditLog)).all() == []
        assert session.scalar(select(Order.id).limit(1)) is not None  # the shop is there
