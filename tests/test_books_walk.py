"""Issue 10's "done when", walked as a customer would, offline through the local stand-in.

A customer subscribes to Basic with TEST50, renews twice, upgrades to Premium and
schedules the downgrade back to Basic, all through the site's pages and the test
checkout and portal (`make run`); every step reaches the books as Stripe's signed
webhooks. Then the billing history, the admin's payments, CSV and revenue, and
`flask stripe audit` are read against what the stand-in says Stripe took.
"""

import csv
import io
import re

import pytest
from sqlalchemy import select

from billing_site.models import Order, Refund, Subscription
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user

HX = {"HX-Request": "true"}


def csrf(client, path="/auth/login") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def local(url: str) -> str:
    return url.removeprefix("http://localhost")


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&amp;", "&")


def stripe_state(app) -> dict:
    with app.extensions["stripe_gateway"]._state() as state:
        return state


def audit(app):
    return app.test_cli_runner().invoke(args=["stripe", "audit", "--since", "30d"])


def subscribe_with_code(client, tier: str, code: str) -> None:
    checkout = local(
        client.post(f"/checkout/plan/{tier}", data={"csrf_token": csrf(client)}).headers["Location"]
    )
    client.post(f"{checkout}/promotion", data={"csrf_token": csrf(client, checkout), "code": code})
    assert (
        client.post(f"{checkout}/pay", data={"csrf_token": csrf(client, checkout)}).status_code
        == 303
    )


def open_portal(client) -> str:
    response = client.post("/account/portal", data={"csrf_token": csrf(client, "/account")})
    return local(response.headers["Location"])


def press(client, portal: str, action_path: str):
    session_id = re.search(r"session=(\w+)", portal).group(1)
    response = client.post(
        f"{action_path}?session={session_id}", data={"csrf_token": csrf(client, portal)}
    )
    assert response.status_code == 303
    return response


def upgrade(client, tier: str) -> str:
    """Preview the upgrade (HTMX), then confirm it; returns the amount the preview showed."""
    html = client.get(f"/account/plan/preview?tier={tier}", headers=HX).get_data(as_text=True)
    amount = re.search(r'id="amount-due">([^<]+)<', html).group(1)
    token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    form = {"csrf_token": csrf(client), "tier": tier, "token": token}
    assert client.post("/account/plan/upgrade", data=form).status_code == 303
    return amount


def schedule_downgrade(client, tier: str) -> str:
    headers = {**HX, "X-CSRFToken": csrf(client)}
    response = client.post("/account/plan/downgrade", data={"tier": tier}, headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def orders(db) -> list[Order]:
    db.session.expire_all()
    return db.session.scalars(select(Order).order_by(Order.id)).all()


@pytest.fixture
def walked(app, db, client):
    """The customer's month: TEST50 on Basic, two renewals, Premium now, Basic at period end."""
    log_in(client, make_user("walker@example.com"))
    subscribe_with_code(client, "basic", "TEST50")
    subscription = db.session.scalars(select(Subscription)).one()
    portal = open_portal(client)
    for _ in range(2):
        press(
            client, portal, f"/dev/portal/subscriptions/{subscription.stripe_subscription_id}/renew"
        )
    preview = upgrade(client, "premium")
    downgrade = schedule_downgrade(client, "basic")
    return {"preview": preview, "downgrade": downgrade, "portal": portal}


def charged(app) -> list[int]:
    return sorted(charge["amount"] for charge in stripe_state(app)["charges"].values())


def test_stripe_took_half_then_two_renewals_then_one_proration_of_a_whole_period(app, walked):
    # A period already paid at Basic, upgraded at its very start: $29.99 − $9.99.
    assert charged(app) == [500, 999, 999, 2000]
    assert walked["preview"] == "$20.00"
    reasons = [i["billing_reason"] for i in stripe_state(app)["invoices"].values()]
    assert reasons.count("subscription_update") == 1


def test_the_billing_history_shows_every_payment_at_what_stripe_took(app, db, client, walked):
    page = text_of(client.get("/account/billing").get_data(as_text=True))
    rows = re.findall(
        r"\d+ \w{3} \d{4} (.+?) (\$[\d.,]+) (Paid|Refunded|Partially refunded) Receipt", page
    )

    assert [(amount, status) for _, amount, status in rows] == [
        ("$20.00", "Paid"),
        ("$9.99", "Paid"),
        ("$9.99", "Paid"),
        ("$5.00", "Paid"),
    ]
    labels = [label for label, _, _ in rows]
    assert labels[0].startswith("Premium — plan change, ")
    assert labels[1].startswith("Basic — renewal, ") and labels[2].startswith("Basic — renewal, ")
    assert labels[3].startswith("Basic — first month, ") and "discount applied" in labels[3]
    first = orders(db)[0]
    assert (first.amount_subtotal_cents, first.amount_discount_cents) == (999, 499)
    assert first.promotion_code == "promo_local_test50"  # as for a pack


def test_the_downgrade_waits_for_the_period_end_and_premium_holds_until_then(db, client, walked):
    subscription = db.session.scalars(select(Subscription)).one()
    on = f"{subscription.current_period_end:%-d %b}"
    assert f"Changes to Basic on {on}" in walked["downgrade"]
    assert (subscription.tier, subscription.scheduled_tier) == ("premium", "basic")
    assert f"Changes to Basic on {on}" in client.get("/account").get_data(as_text=True)


def test_the_admin_sees_every_payment_in_the_list_the_csv_and_revenue(app, db, walked):
    admin = app.test_client()
    log_in(admin, make_user("boss@example.com", is_admin=True))

    listed = text_of(admin.get("/admin/orders").get_data(as_text=True))
    assert "all 4 matching orders" in listed
    export = admin.get("/admin/orders.csv", buffered=True).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(export)))
    assert sorted((r["Kind"], r["Amount"]) for r in rows) == [
        ("proration", "20.00"),
        ("renewal", "9.99"),
        ("renewal", "9.99"),
        ("subscription", "5.00"),
    ]
    overview = admin.get("/admin/").get_data(as_text=True)
    taken = sum(charged(app))
    assert re.search(rf'id="revenue-today">\${taken / 100:.2f}<', overview)


def test_the_audit_finds_no_difference_then_each_planted_one(app, db, client, walked):
    result = audit(app)
    assert result.exit_code == 0, result.output
    assert "4 charge(s), 0 refund(s), 0 dispute(s)" in result.output
    assert "4 matched to a charge" in result.output

    renewal = next(o for o in orders(db) if o.kind == "renewal")
    renewal.amount_cents = 1099
    db.session.commit()
    planted = audit(app)
    assert planted.exit_code == 1
    assert f"order {renewal.id}: booked 1099, Stripe took 999" in planted.output
    assert "1 difference(s)." in planted.output
    renewal.amount_cents = 999
    db.session.commit()
    first = orders(db)[0]
    first.amount_discount_cents = 0  # as if TEST50 had never been applied
    db.session.commit()
    planted = audit(app)
    assert planted.exit_code == 1
    assert f"order {first.id}: booked a discount of 0, Stripe's is 499" in planted.output
    first.amount_discount_cents = 499
    db.session.commit()

    proration = next(o for o in orders(db) if o.kind == "proration")
    charge_id = next(c["id"] for c in stripe_state(app)["charges"].values() if c["amount"] == 2000)
    press(client, walked["portal"], f"/dev/portal/charges/{charge_id}/refund-half")
    after_refund = audit(app)
    assert after_refund.exit_code == 0, after_refund.output
    [refund] = db.session.scalars(select(Refund)).all()
    assert (refund.order_id, refund.amount_cents) == (proration.id, 1000)
    db.session.delete(refund)
    db.session.commit()
    planted = audit(app)
    assert planted.exit_code == 1
    assert f"DIFF refund          {refund.stripe_refund_id}" in planted.output


def test_a_renewal_announced_without_its_payments_is_booked_with_its_payment_intent(
    app, db, client
):
    # Stripe's invoice.paid does not include invoice.payments; without the payment
    # intent the renewal could be neither refunded nor paired with its charge.
    from tests.stripe_events import post_event

    log_in(client, make_user("renewer@example.com"))
    subscribe_with_code(client, "basic", "FREE100")
    subscription = db.session.scalars(select(Subscription)).one()
    gateway = app.extensions["stripe_gateway"]
    events = gateway.renew_subscription(subscription.stripe_subscription_id, deliver=False)
    for event in events:
        event["data"]["object"].pop("payments", None)
        assert post_event(client, event).status_code == 200

    [charge] = stripe_state(app)["charges"].values()
    renewal = next(o for o in orders(db) if o.kind == "renewal")
    assert (renewal.amount_cents, renewal.payment_intent_id) == (999, charge["payment_intent"])
    assert audit(app).exit_code == 0
