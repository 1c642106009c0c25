"""The account dashboard: balance and lots, plan, usage chart, ledger, orders, receipts."""

import re
from datetime import timedelta

from sqlalchemy import event, insert, text

from billing_site import credits
from billing_site.account import services
from billing_site.account.services import LEDGER_PAGE_SIZE, layout_chart, next_month_start
from billing_site.extensions import db
from billing_site.models import CreditLot, Generation, LedgerEntry, User, utcnow
from tests.conftest import post_json
from tests.factories import (
    logged_in,
    make_customer,
    make_order,
    make_subscription,
    make_user,
)


def dashboard(client):
    response = client.get("/account")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_dashboard_asks_visitors_to_log_in(client):
    response = client.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login")


def test_free_customer_sees_ten_monthly_credits_expiring_at_month_end(app, client):
    user_id = make_customer(app)
    logged_in(client, app, user_id)
    html = dashboard(client)
    dashboard(client)  # a second visit grants nothing more
    month_end = next_month_start(utcnow())
    assert '<span class="balance-number">10</span>' in html
    assert "Free monthly" in html and "10 / 10" in html
    assert f"Next expiry: {month_end:%-d %b %Y}" in html  # one date style: "1 Feb 2027"
    with app.app_context():
        [lot] = db.session.query(CreditLot).filter_by(user_id=user_id).all()
        assert (lot.source, lot.credits_granted, lot.expires_at) == ("free", 10, month_end)
        assert credits.current_balance(user_id) == 10


def test_subscriber_sees_tier_status_and_renewal_date(app, client):
    period_end = utcnow() + timedelta(days=20)
    user_id = make_customer(app, balance=50, tier="basic", current_period_end=period_end)
    logged_in(client, app, user_id)
    html = dashboard(client)
    assert "<strong>Basic</strong>" in html
    assert "pill-active" in html
    assert f"Renews on {period_end:%-d %B %Y}." in html
    assert "Free monthly" not in html  # a paying tier gets its credits from invoice.paid


def test_pending_cancellation_shows_the_date_it_ends(app, client):
    period_end = utcnow() + timedelta(days=9)
    user_id = make_customer(
        app, tier="basic", current_period_end=period_end, cancel_at_period_end=True
    )
    logged_in(client, app, user_id)
    assert f"Cancels on {period_end:%-d %B %Y}." in dashboard(client)


def test_past_due_subscription_shows_a_banner_with_the_portal_button(app, client):
    user_id = make_customer(app, tier="basic", status="past_due")
    logged_in(client, app, user_id)
    html = dashboard(client)
    banner = html[html.index('id="past-due-banner"') :]
    banner = banner[: banner.index("</div>")]
    assert "Update your payment method" in banner
    assert 'action="/account/portal"' in banner


def test_no_banner_while_payments_succeed(app, client):
    user_id = make_customer(app, tier="basic")
    logged_in(client, app, user_id)
    assert "past-due-banner" not in dashboard(client)


def test_usage_chart_is_a_server_rendered_svg_of_generations_per_day(app, client):
    user_id = make_customer(app, balance=20, tier="basic")
    with app.app_context():
        now = utcnow()
        for days_ago, count in ((0, 3), (1, 1)):
            for _ in range(count):
                db.session.add(
                    Generation(
                        user_id=user_id,
                        prompt="p",
                        model="standard",
                        credits_charged=1,
                        status="succeeded",
                        created_at=now - timedelta(days=days_ago),
                    )
                )
        db.session.commit()
    logged_in(client, app, user_id)
    html = dashboard(client)
    chart = html[
        html.index('id="usage-chart"') : html.index("</figure>", html.index('id="usage-chart"'))
    ]
    assert "<svg" in chart
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', chart)]
    assert counts[-2:] == [1, 3]
    assert sum(counts) == 4
    assert "4 generations" in html


def test_the_page_reads_usage_and_chart_in_one_statement_with_the_same_answer(app):
    # A period that began at noon three days ago: a generation that morning is drawn
    # on the chart (which counts whole days) but is not this period's usage.
    with app.app_context():
        now = utcnow()
        period_start = (now - timedelta(days=3)).replace(hour=12, minute=0)
        user = make_user()
        make_subscription(user, "basic", current_period_start=period_start)
        for created_at, charged in (
            (period_start - timedelta(hours=2), 5),  # same day, before the period
            (period_start - timedelta(days=2), 7),  # before the chart and the period
            (period_start + timedelta(hours=1), 2),
            (now, 3),
        ):
            db.session.add(
                Generation(
                    user_id=user.id,
                    prompt="p",
                    model="standard",
                    credits_charged=charged,
                    status="succeeded",
                    created_at=created_at,
                )
            )
        db.session.commit()
        separate = services.usage(user)
        chart = services.usage_chart(user, separate.period, now)
        together, one_chart = services.usage_with_chart(user, now)
    assert (together.credits_used, together.generations) == (5, 2)
    assert together == separate
    assert one_chart == chart
    assert chart.total == 3


def test_chart_scales_bars_to_the_busiest_day():
    from datetime import date

    chart = layout_chart([(date(2026, 1, 1), 2), (date(2026, 1, 2), 4), (date(2026, 1, 3), 0)])
    assert [bar.height for bar in chart.bars] == [60, 120, 0]
    assert [bar.y for bar in chart.bars] == [60, 0, 120]
    assert (chart.peak, chart.total) == (4, 6)


def test_dashboard_has_no_inline_script_or_style(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    html = dashboard(client)
    assert "style=" not in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None


def add_ledger_entries(user_id: int, count: int) -> None:
    """Rows straight into the table: arranging a long history, not exercising the ledger."""
    now = utcnow()
    rows = [
        {
            "user_id": user_id,
            "kind": "grant",
            "delta": 1,
            "balance_after": n + 1,
            "reference": f"test:{n}",
            "created_at": now,
        }
        for n in range(count)
    ]
    db.session.execute(insert(LedgerEntry), rows)
    db.session.commit()


def ledger_balances(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td class="numeric">(-?\d+)</td>\s*</tr>', html)]


def test_ledger_loads_more_with_htmx_twenty_at_a_time(app, client):
    user_id = make_customer(app, tier="basic")
    with app.app_context():
        add_ledger_entries(user_id, 45)
    logged_in(client, app, user_id)
    first = dashboard(client)
    assert ledger_balances(first)[:LEDGER_PAGE_SIZE] == list(range(45, 25, -1))
    more = re.search(r'hx-get="(/account/ledger\?before=\d+)"', first).group(1)

    second = client.get(more, headers={"HX-Request": "true"})
    html = second.get_data(as_text=True)
    assert "HX-Request" in second.headers["Vary"]
    assert html.lstrip().startswith("<tbody")
    assert ledger_balances(html) == list(range(25, 5, -1))
    # The button that asked for this page removes itself.
    assert re.search(r'<tr id="ledger-more-\d+" hx-swap-oob="delete">', html)

    last_url = re.search(r'hx-get="(/account/ledger\?before=\d+)"', html).group(1)
    last = client.get(last_url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert ledger_balances(last) == [5, 4, 3, 2, 1]
    assert "Load more" not in last


def test_ledger_page_number_without_htmx_is_a_whole_page(app, client):
    user_id = make_customer(app, tier="basic")
    with app.app_context():
        add_ledger_entries(user_id, 25)
    logged_in(client, app, user_id)
    response = client.get("/account/ledger?page=2")
    html = response.get_data(as_text=True)
    assert "<!doctype html>" in html
    assert ledger_balances(html) == [5, 4, 3, 2, 1]


def test_ledger_stays_on_the_index_with_100000_entries(app, client):
    user_id = make_customer(app, tier="basic")
    with app.app_context():
        add_ledger_entries(user_id, 100_000)
        other = make_user()
        add_ledger_entries(other.id, 1000)
        db.session.execute(text("ANALYZE ledger_entries"))
        db.session.commit()
        engine = db.engine
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    logged_in(client, app, user_id)
    event.listen(engine, "before_cursor_execute", record)
    try:
        html = client.get("/account/ledger?before=50000", headers={"HX-Request": "true"}).get_data(
            as_text=True
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert ledger_balances(html) == list(range(49999, 49979, -1))
    ledger_queries = [(s, p) for s, p in statements if "FROM ledger_entries" in s]
    assert len(ledger_queries) == 1, statements
    assert not any("count(" in s.lower() for s, _ in statements)
    statement, parameters = ledger_queries[0]
    with engine.connect() as connection:
        plan = "\n".join(connection.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
    # Walked in id order off an index and stopped after 21 rows: no sort, no
    # full scan. (PostgreSQL picks the (user_id, id) index or, when this user
    # owns nearly every row, the primary key; both stop at the LIMIT.) The lots,
    # orders and generations joined on are looked up per row, or, while a table
    # is as small as this test's orders, read whole once.
    assert plan.startswith("Limit"), plan
    assert "Index Scan Backward using" in plan, plan
    assert "Sort" not in plan and "Seq Scan on ledger_entries" not in plan, plan
    assert "Seq Scan on generations" not in plan, plan


def test_ledger_page_reads_any_reference_without_failing(app, client):
    # The generation's id is parsed out of the reference in SQL; a reference that
    # only looks like one (hand-typed by support) must not break the page.
    user_id = make_customer(app, balance=10, tier="basic")
    logged_in(client, app, user_id)
    adjustments_before = dashboard(client).count("Adjustment by support")
    with app.app_context():
        generation = Generation(user_id=user_id, prompt="p", model="hd", credits_charged=2)
        db.session.add(generation)
        db.session.flush()
        credits.spend(user_id, 2, reference=f"generation:{generation.id}")
        for reference in ("generation:abc", "generation:99999999999999999999", "generation:"):
            credits.claw_back(user_id, 1, reference=reference, note="odd", kind="adjust")
        db.session.commit()
    html = dashboard(client)
    assert "Generation — HD" in html
    assert html.count("Adjustment by support") == adjustments_before + 3


def test_orders_show_status_pills_and_receipt_links(app, client):
    user_id = make_customer(app, tier="basic")
    with app.app_context():
        user = db.session.get(User, user_id)
        paid = make_order(user, "pro", status="paid", paid_at=utcnow())
        refunded = make_order(
            user, "starter", status="partially_refunded", amount_refunded_cents=200
        )
        failed = make_order(user, "starter", status="failed")
        ids = (paid.id, refunded.id, failed.id)
    logged_in(client, app, user_id)
    html = dashboard(client)
    assert '<span class="pill pill-paid">Paid</span>' in html
    assert '<span class="pill pill-partially_refunded">Partially refunded</span>' in html
    assert '<span class="pill pill-failed">Failed</span>' in html
    assert f'href="/account/orders/{ids[0]}/receipt"' in html
    assert f'href="/account/orders/{ids[1]}/receipt"' in html
    assert f'href="/account/orders/{ids[2]}/receipt"' not in html

    receipt = client.get(f"/account/orders/{ids[1]}/receipt").get_data(as_text=True)
    assert "Starter Pack" in receipt  # as the catalog spells it
    assert "$5.00" in receipt and "Refunded" in receipt and "$2.00" in receipt


def test_someone_elses_receipt_is_not_found(app, client):
    owner_id = make_customer(app)
    with app.app_context():
        order_id = make_order(db.session.get(User, owner_id), status="paid").id
    snooper_id = make_customer(app)
    logged_in(client, app, snooper_id)
    assert client.get(f"/account/orders/{order_id}/receipt").status_code == 404
    assert client.get("/account/orders/999999/receipt").status_code == 404


def test_recent_generations_are_listed(app, client):
    user_id = make_customer(app, balance=3, tier="basic")
    logged_in(client, app, user_id)
    post_json(client, "/api/v1/generations", {"prompt": "a red kite", "model": "standard"})
    html = dashboard(client)
    section = html[html.index('id="recent-generations"') :]
    assert "a red kite" in section
    assert 'src="data:image/svg+xml;base64,' in section


def test_usage_api_reports_tier_balance_and_use(app, client):
    user_id = make_customer(app, balance=150, tier="basic")
    logged_in(client, app, user_id)
    for _ in range(2):
        post_json(client, "/api/v1/generations", {"prompt": "a kite", "model": "hd"})
    body = client.get("/api/v1/account/usage").json
    assert body == client.get("/api/v1/usage").json  # the old path is an alias
    assert (body["plan"], body["balance"], body["used"], body["generations"]) == (
        "basic",
        146,
        4,
        2,
    )
    assert (body["allowance"], body["percentage"]) == (200, 2)
    assert (body["unlimited"], body["has_credit"], body["purchase_required"]) == (
        False,
        True,
        False,
    )
    assert body["period_end"].endswith("Z")
    assert sum(day["count"] for day in body["per_day"]) == 2


def test_usage_api_for_an_empty_balance_says_a_purchase_is_required(app, client):
    user_id = make_customer(app, tier="basic")
    logged_in(client, app, user_id)
    body = client.get("/api/v1/account/usage").json
    assert (body["balance"], body["has_credit"], body["purchase_required"]) == (0, False, True)


def test_usage_api_for_premium_is_unlimited(app, client):
    user_id = make_customer(app, tier="premium")
    logged_in(client, app, user_id)
    body = client.get("/api/v1/account/usage").json
    assert (body["unlimited"], body["allowance"], body["has_credit"]) == (
        True,
        None,
        True,
    )


def test_usage_api_needs_a_login(client):
    response = client.get("/api/v1/account/usage")
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
