"""What a newcomer saw (issue 13), as pages: balances, words, one format, no inline style."""

import re
from datetime import timedelta
from pathlib import Path

import responses

from billing_site import audit, credits, formatting
from billing_site.account.services import describe_entry, layout_chart, ledger_page
from billing_site.extensions import db
from billing_site.models import Generation, User, utcnow
from tests.admin_actions import (
    STRIPE_TEST_KEY,
    admin_client,
    confirm_refund,
    inside,
    paid_order,
    refund_callback,
)
from tests.factories import log_in, logged_in, make_customer, make_paid_order, make_user

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def badge(html: str) -> str:
    match = re.search(r'<a id="balance-badge"[^>]*>.*?</a>', html, re.DOTALL)
    return match.group(0) if match else ""


# --- 2. unlimited and admins ---------------------------------------------------------------


def test_a_premium_customer_sees_unlimited_never_a_red_zero(app, client):
    logged_in(client, app, make_customer(app, tier="premium"))

    for path in ("/pricing", "/account", "/generate"):
        html = page(client, path)
        assert "Unlimited" in badge(html), path
        assert "badge-empty" not in badge(html), path
    account = page(client, "/account")
    balance_card = account[account.index('id="balance-card"') : account.index("</section>")]
    assert '<span class="balance-number">Unlimited</span>' in balance_card
    assert "up to 100 an hour (fair use)" in balance_card
    assert "Buy credits" not in balance_card


def test_an_admin_who_is_not_a_customer_has_no_credits_badge(app, client):
    with app.app_context():
        admin = make_user("boss@example.com", is_admin=True)
        log_in(client, admin)

    html = page(client, "/admin/")
    assert 'id="balance-badge"' not in html
    assert ">Admin</a>" in html


def test_a_customer_with_no_credits_still_sees_the_empty_badge(app, client):
    logged_in(client, app, make_customer(app, tier="basic"))

    assert "badge-empty" in badge(page(client, "/pricing"))


# --- 3. a past-due card ---------------------------------------------------------------------


def test_a_past_due_plan_says_the_payment_failed_and_when_to_fix_it_by(app, client):
    start = utcnow().replace(microsecond=0) - timedelta(days=2)
    user_id = make_customer(app, tier="basic", status="past_due", current_period_start=start)
    logged_in(client, app, user_id)

    card = page(client, "/account/subscription")
    deadline = start + timedelta(days=14)
    assert f"Payment failed — update your card by {deadline.day} {deadline:%B %Y}" in card
    assert "Renews on" not in card


# --- 5. the customer's ledger in their own words ------------------------------------------


def ledger_rows(html: str) -> list[str]:
    table = html[html.index('id="ledger-table"') :]
    table = table[: table.index("</table>")]
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in table.split("<tr")[2:]
    ]


def test_the_customers_ledger_speaks_their_language_and_keeps_admin_reasons_out(app, client):
    with inside(app):
        customer = make_user("lee@example.com")
        make_paid_order(customer, "pro")
        customer_id = customer.id
    admin, admin_id = admin_client(app)
    with inside(app):
        entry = audit.record(admin_id, "credits.adjust", "user", customer_id, {"delta": -3})
        credits.claw_back(
            customer_id, 3, reference="adjustment:x", note="test negative", kind="adjust"
        )
        generation = Generation(user_id=customer_id, prompt="p", model="hd", credits_charged=2)
        db.session.add(generation)
        db.session.flush()
        credits.spend(customer_id, 2, reference=f"generation:{generation.id}")
        db.session.commit()
        assert entry.id
    logged_in(client, app, customer_id)

    html = page(client, "/account")
    rows = ledger_rows(html)
    assert rows[0].startswith(rows[0].split(",")[0])  # a date first
    descriptions = " | ".join(rows)
    assert "Generation — HD" in descriptions
    assert "Adjustment by support" in descriptions
    assert "Pro Pack" in descriptions
    for internal in ("test negative", "generation:", "order:", "adjustment:", "Spend", "Adjust ·"):
        assert internal not in descriptions, internal
    # The admin still sees the reason and the reference.
    admin_html = page(admin, f"/admin/users/{customer_id}")
    assert "test negative" in admin_html and "adjustment:x" in admin_html


def test_every_kind_of_entry_has_words_for_the_customer(app):
    with inside(app):
        user = make_user()
        credits.grant(user.id, 10, source="free", source_ref="f", expires_at=None, note="free")
        credits.claw_back(user.id, 1, reference="dispute:dp_1", note="dispute dp_1 opened")
        db.session.commit()
        words = [describe_entry(entry) for entry in ledger_page(user.id).entries]
    assert words == ["Payment disputed", "Free monthly credits"]  # newest first


# --- 6. one format --------------------------------------------------------------------------


def test_one_format_for_money_dates_products_and_models(app):
    with app.app_context():
        assert formatting.money(2000) == "$20.00"
        assert formatting.money(-500) == "-$5.00"
        assert formatting.money(123456, "eur") == "€1,234.56"
        assert formatting.date(utcnow().replace(year=2027, month=2, day=1)) == "1 Feb 2027"
        assert formatting.product_name("pack", "pro") == "Pro Pack"
        assert formatting.product_name("subscription", "basic") == "Basic plan"
        assert formatting.model_name("hd") == "HD"


def test_pricing_refunds_and_admin_use_the_one_money_formatter(app):
    from billing_site.pricing.routes import format_money
    from billing_site.refunds import format_cents

    with app.app_context():
        assert format_money(2000) == format_cents(2000) == formatting.money(2000) == "$20.00"


def test_the_account_shows_money_as_dollars_and_products_as_the_catalog_spells_them(app, client):
    with inside(app):
        customer = make_user()
        make_paid_order(customer, "pro")
        customer_id = customer.id
    logged_in(client, app, customer_id)

    orders = page(client, "/account").split('id="orders"')[1].split("</section>")[0]
    assert "Pro Pack" in orders and "$20.00" in orders
    assert "USD" not in orders and "Pro pack" not in orders


def test_the_audit_log_reads_as_sentences(make_app):
    app = make_app(STRIPE_SECRET_KEY=STRIPE_TEST_KEY)
    order_id, _ = paid_order(app, "starter")
    admin, _ = admin_client(app)
    with responses.RequestsMock() as stripe:
        stripe.add_callback(
            responses.POST, "https://api.stripe.com/v1/refunds", callback=refund_callback()
        )
        confirm_refund(admin, order_id, "5.00")

    html = page(admin, "/admin/audit")
    assert "Refunded $5.00; 20 credits clawed back" in html
    assert "Asked Stripe to refund $5.00 (requested by customer)" in html
    assert "amount_cents" not in html


# --- 7. the anonymous limit -----------------------------------------------------------------


def test_a_visitor_past_the_cap_is_told_when_it_resets_and_generate_is_disabled(client):
    token = re.search(r'name="csrf_token" value="([^"]+)"', page(client, "/generate")).group(1)
    for _ in range(4):
        response = client.post(
            "/generate", data={"prompt": "x", "model": "standard", "csrf_token": token}
        )
    assert response.status_code == 429
    html = response.get_data(as_text=True)
    assert re.search(r"You can try again (tomorrow )?at \d\d:\d\d UTC, or sign up", html)
    assert re.search(r'<button type="submit" class="button button-generate" disabled', html)
    again = page(client, "/generate")
    assert re.search(r'class="button button-generate" disabled', again)


# --- 8. the free card for someone who signed up ----------------------------------------------


def test_a_subscriber_is_not_told_the_free_tier_is_included_when_they_sign_up(app, client):
    logged_in(client, app, make_customer(app, tier="basic"))

    html = page(client, "/pricing")
    free = re.search(r'id="tier-free".*?</article>', html, re.DOTALL).group(0)
    assert "Included when you sign up" not in free and "Your plan" not in free


# --- 10. no inline style anywhere --------------------------------------------------------------


def test_no_template_carries_an_inline_style(app):
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        if path.relative_to(TEMPLATES).parts[0] == "email":
            continue  # mail clients need inline styles; CSP does not apply to mail
        text = path.read_text()
        if re.search(r"\sstyle=|<style", text):
            offenders.append(str(path.relative_to(TEMPLATES)))
    assert offenders == []


# --- 11. the usage chart ------------------------------------------------------------------------


def test_the_usage_chart_has_axes_a_today_label_and_a_sensible_empty_month():
    from datetime import date

    today = date(2027, 2, 1)
    empty = layout_chart([(today, 0)], slots=28, today=today)
    assert empty.width == 28 * 18  # the whole month, not one hairline bar
    assert [value for value, _ in empty.ticks] == [0, 1]
    assert empty.bars[0].label == "today"

    days = [(date(2027, 2, day), day % 5) for day in range(1, 15)]
    busy = layout_chart(days, slots=28, today=date(2027, 2, 14))
    assert [value for value, _ in busy.ticks] == [0, 2, 4]
    assert busy.bars[-1].label == "today"
    assert [bar.label for bar in busy.bars if bar.label][:2] == ["1", "8"]


def test_the_dashboard_draws_the_empty_chart_with_a_message(app, client):
    logged_in(client, app, make_customer(app, balance=3))
    html = page(client, "/account")
    assert "No generations yet this period" in html
    assert 'class="chart-label chart-label-day">today<' in html


# --- 13. the landing page and its cache ---------------------------------------------------------


def test_the_landing_page_is_replayed_from_memory_to_visitors_without_cookies(app):
    first = app.test_client().get("/")
    with app.app_context():
        assert db.session.get(User, 1) is None
    later = app.test_client().get("/")
    assert later.get_data() == first.get_data()
    assert "Turn a sentence into an image" in later.get_data(as_text=True)
    assert app.test_client().get("/pricing").get_data() != first.get_data()
