"""Books that equal Stripe (issue 10; matrix rows 39-41): every charge Stripe reports
is one payment, booked at what Stripe took, and credits come only when that is
what the payment expected or a discount explains it. On PostgreSQL (`db`)."""

import random
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from billing_site import refunds
from billing_site.admin.services import overview, revenue_by_day
from billing_site.models import CreditLot, Order, User
from tests.factories import log_in, make_order, make_subscription, make_user
from tests.stripe_events import checkout_session, make_event, post_event, stripe_object

DAY = 86400


def deliver(client, event_type, obj, *, created=None):
    response = post_event(client, make_event(event_type, obj, created=created))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def session_for(order, *, payment_status="paid", **changes) -> dict:
    """The order's Checkout Session with no discount or tax unless `changes` say so."""
    session = checkout_session(order, payment_status=payment_status)
    session["total_details"] = {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
    session.update(changes)
    return session


def admin_of(app):
    """A client logged in as a new admin (the test's own app context stays in place)."""
    admin = app.test_client()
    log_in(admin, make_user(f"admin{time.monotonic_ns()}@example.com", is_admin=True))
    return admin


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def orders_of(db, user, **criteria) -> list[Order]:
    db.session.expire_all()
    statement = select(Order).where(Order.user_id == user.id).filter_by(**criteria)
    return list(db.session.execute(statement.order_by(Order.id)).scalars())


def invoice(
    user,
    *,
    invoice_id,
    sub_id="sub_books_1",
    reason="subscription_cycle",
    total=999,
    subtotal=None,
    discount=0,
    period_start=None,
    metadata=None,
    currency="usd",
) -> dict:
    """A paid subscription invoice shaped as API 2026-07-29 sends it (payments list, parent)."""
    start = period_start or int(time.time())
    inv = stripe_object(
        "invoice",
        id=invoice_id,
        status="paid",
        customer=user.stripe_customer_id,
        billing_reason=reason,
        currency=currency,
        amount_due=total,
        amount_paid=total,
        amount_remaining=0,
        subtotal=total + discount if subtotal is None else subtotal,
        total=total,
        total_discount_amounts=[{"amount": discount, "discount": "di_test"}] if discount else [],
        hosted_invoice_url=f"https://invoice.stripe.com/i/{invoice_id}",
        status_transitions={"finalized_at": start, "paid_at": start},
        payments={
            "object": "list",
            "data": [
                {
                    "object": "invoice_payment",
                    "payment": {"type": "payment_intent", "payment_intent": f"pi_{invoice_id}"},
                    "status": "paid",
                }
            ],
        },
    )
    inv["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {
            "metadata": metadata or {"user_id": str(user.id), "tier": "basic"},
            "subscription": sub_id,
        },
    }
    line = inv["lines"]["data"][0]
    line["period"] = {"start": start, "end": start + 30 * DAY}
    line["parent"] = {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": reason == "subscription_update",
            "proration_details": {"credited_items": None},
            "subscription": sub_id,
            "subscription_item": "si_books_1",
        },
    }
    return inv


# --- 39: a promotion code -----------------------------------------------------------------


def test_a_50_percent_code_books_half_and_grants_the_whole_pack(db, client, app):
    user = make_user()
    order = make_order(user, "pro")  # $20.00, 100 credits
    session = session_for(
        order,
        amount_subtotal=2000,
        amount_total=1000,
        total_details={"amount_discount": 1000, "amount_shipping": 0, "amount_tax": 0},
        discounts=[{"coupon": "TEST50", "promotion_code": "promo_TEST50"}],
    )

    assert deliver(client, "checkout.session.completed", session) == "fulfilled"

    booked = fresh(db, Order, order.id)
    assert (booked.status, booked.amount_cents, booked.expected_amount_cents) == (
        "paid",
        1000,
        2000,
    )
    assert (booked.amount_subtotal_cents, booked.amount_discount_cents) == (2000, 1000)
    assert booked.promotion_code == "promo_TEST50"
    assert db.session.get(User, user.id).balance == 100
    # Revenue counts what was taken; a refund can never ask for more than that.
    assert overview().revenue_today_cents == 1000
    assert refunds.check_refund(booked, None) == 1000
    log_in(client, user)
    page = client.get("/account/billing").get_data(as_text=True)
    assert "Pro Pack" in page and "$10.00" in page and "$20.00" not in page


def test_a_100_percent_code_grants_the_pack_and_books_nothing_taken(db, client):
    user = make_user()
    order = make_order(user, "starter")
    session = session_for(
        order,
        payment_status="no_payment_required",
        amount_subtotal=500,
        amount_total=0,
        total_details={"amount_discount": 500, "amount_shipping": 0, "amount_tax": 0},
        discounts=[{"coupon": "FREE100", "promotion_code": "promo_FREE100"}],
        payment_intent=None,
    )

    assert deliver(client, "checkout.session.completed", session) == "fulfilled"

    booked = fresh(db, Order, order.id)
    assert (booked.status, booked.amount_cents) == ("paid", 0)
    assert db.session.get(User, user.id).balance == 20
    assert overview().revenue_today_cents == 0
    assert booked.refundable_cents == 0


def test_tax_on_top_of_the_price_is_not_a_mismatch(db, client):
    user = make_user()
    order = make_order(user, "pro")
    session = session_for(
        order,
        amount_subtotal=2000,
        amount_total=2200,
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 200},
    )

    assert deliver(client, "checkout.session.completed", session) == "fulfilled"
    booked = fresh(db, Order, order.id)
    assert (booked.amount_cents, booked.amount_tax_cents, booked.status) == (2200, 200, "paid")


# --- 40: amounts that are not what the order expected ---------------------------------------


def test_a_session_in_another_currency_grants_nothing_and_needs_review(db, client, app):
    user = make_user("yen@example.com")
    order = make_order(user, "pro")
    session = session_for(order, currency="jpy", amount_total=2000, amount_subtotal=2000)

    outcome = deliver(client, "checkout.session.completed", session)

    assert outcome.startswith("needs_review: currency jpy")
    booked = fresh(db, Order, order.id)
    assert (booked.status, booked.currency) == ("needs_review", "jpy")
    assert db.session.get(User, user.id).balance == 0
    assert db.session.scalar(select(func.count()).select_from(CreditLot)) == 0
    # A second delivery changes nothing.
    assert deliver(client, "checkout.session.completed", session).startswith("noop")
    admin = admin_of(app)
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'id="needs-review"' in page and "yen@example.com" in page and "currency jpy" in page


def test_an_amount_below_the_order_with_no_discount_grants_nothing(db, client):
    user = make_user()
    order = make_order(user, "ultimate")
    session = session_for(order, amount_total=1, amount_subtotal=1)

    assert deliver(client, "checkout.session.completed", session).startswith("needs_review")
    booked = fresh(db, Order, order.id)
    assert (booked.status, booked.amount_cents, booked.expected_amount_cents) == (
        "needs_review",
        1,
        15000,
    )
    assert db.session.get(User, user.id).balance == 0
    # Refunds are bounded by the cent actually charged.
    assert refunds.check_refund(booked, None) == 1


def test_a_discount_that_does_not_add_up_is_not_an_explanation(db, client):
    user = make_user()
    order = make_order(user, "pro")
    session = session_for(
        order,
        amount_subtotal=2000,
        amount_total=100,
        total_details={"amount_discount": 1000, "amount_shipping": 0, "amount_tax": 0},
    )
    assert deliver(client, "checkout.session.completed", session).startswith("needs_review")
    assert db.session.get(User, user.id).balance == 0


# --- 41: renewals in the books --------------------------------------------------------------


def test_three_renewals_delivered_twice_in_any_order_are_three_payments(db, client, app):
    user = make_user(stripe_customer_id="cus_books_renew")
    make_subscription(user, "basic", stripe_subscription_id="sub_books_1")
    now = int(time.time())
    invoices = [
        invoice(user, invoice_id=f"in_renew_{n}", period_start=now - (2 - n) * 30 * DAY + 60)
        for n in range(3)
    ]
    deliveries = invoices * 2
    random.Random(41).shuffle(deliveries)

    for paid in deliveries:
        deliver(client, "invoice.paid", paid)

    renewals = orders_of(db, user, kind="renewal")
    assert sorted(o.stripe_invoice_id for o in renewals) == [
        "in_renew_0",
        "in_renew_1",
        "in_renew_2",
    ]
    assert {(o.status, o.amount_cents, o.currency) for o in renewals} == {("paid", 999, "usd")}
    assert all(o.payment_intent_id == f"pi_{o.stripe_invoice_id}" for o in renewals)
    since = datetime.now(UTC) - timedelta(days=90)
    assert sum(day.net_cents for day in revenue_by_day(since)) == 3 * 999
    log_in(client, user)
    for order in renewals:
        receipt = client.get(f"/account/orders/{order.id}/receipt")
        assert receipt.status_code == 200
        html = receipt.get_data(as_text=True)
        assert "Basic — renewal" in html and "$9.99" in html
        assert f"https://invoice.stripe.com/i/{order.stripe_invoice_id}" in html
    billing = client.get("/account/billing").get_data(as_text=True)
    assert billing.count("Basic — renewal") == 3
    # The current period's credits, granted once.
    assert db.session.get(User, user.id).balance == 200


def test_the_first_invoice_and_the_checkout_make_one_payment_in_either_order(db, client):
    for first in ("invoice", "checkout"):
        user = make_user(stripe_customer_id=f"cus_books_first_{first}")
        order = make_order(user, "basic", kind="subscription")
        sub_id = f"sub_first_{first}"
        paid = invoice(
            user,
            invoice_id=f"in_first_{first}",
            sub_id=sub_id,
            reason="subscription_create",
            metadata={"order_id": str(order.id), "user_id": str(user.id), "tier": "basic"},
        )
        session = session_for(order, subscription=sub_id, invoice=paid["id"])
        steps = [("invoice.paid", paid), ("checkout.session.completed", session)]
        for event_type, obj in steps if first == "invoice" else steps[::-1]:
            deliver(client, event_type, obj)
            deliver(client, event_type, obj)

        payments = orders_of(db, user)
        assert [(o.id, o.kind, o.status) for o in payments] == [(order.id, "subscription", "paid")]
        assert payments[0].stripe_invoice_id == paid["id"]
        assert payments[0].payment_intent_id == f"pi_{paid['id']}"
        assert db.session.get(User, user.id).balance == 200


def test_a_proration_invoice_is_booked_once_and_grants_no_allowance(db, client):
    user = make_user(stripe_customer_id="cus_books_prorate")
    make_subscription(user, "premium", stripe_subscription_id="sub_books_1")
    proration = invoice(user, invoice_id="in_prorate", reason="subscription_update", total=1337)

    outcomes = [deliver(client, "invoice.paid", proration) for _ in range(3)]

    assert outcomes[0].startswith("booked proration")
    assert all(o.startswith("noop") for o in outcomes[1:])
    payments = orders_of(db, user, kind="proration")
    assert [(o.amount_cents, o.status) for o in payments] == [(1337, "paid")]
    assert db.session.scalar(select(func.count()).select_from(CreditLot)) == 0


def test_a_renewal_at_a_discount_that_explains_it_grants_the_allowance(db, client):
    user = make_user(stripe_customer_id="cus_books_halfrenew")
    make_subscription(user, "basic", stripe_subscription_id="sub_books_1")
    half = invoice(user, invoice_id="in_half", total=500, discount=499)

    deliver(client, "invoice.paid", half)

    (renewal,) = orders_of(db, user, kind="renewal")
    assert (renewal.amount_cents, renewal.amount_discount_cents, renewal.status) == (
        500,
        499,
        "paid",
    )
    assert db.session.get(User, user.id).balance == 200


def test_a_renewal_in_the_wrong_currency_needs_review_and_grants_nothing(db, client):
    user = make_user(stripe_customer_id="cus_books_eur")
    make_subscription(user, "basic", stripe_subscription_id="sub_books_1")

    deliver(client, "invoice.paid", invoice(user, invoice_id="in_eur", currency="eur"))

    (renewal,) = orders_of(db, user, kind="renewal")
    assert renewal.status == "needs_review"
    assert db.session.get(User, user.id).balance == 0


def test_refunding_half_a_renewal_claws_back_half_its_monthly_lot(db, client):
    user2 = make_user(stripe_customer_id="cus_books_refund2")
    make_subscription(user2, "basic", stripe_subscription_id="sub_books_2")
    deliver(client, "invoice.paid", invoice(user2, invoice_id="in_refund2", sub_id="sub_books_2"))
    (renewal,) = orders_of(db, user2, kind="renewal")
    charge = stripe_object(
        "charge",
        id="ch_refund2",
        payment_intent=renewal.payment_intent_id,
        amount=999,
        amount_refunded=500,
        refunded=False,
    )

    deliver(client, "charge.refunded", charge)

    refunded = fresh(db, Order, renewal.id)
    assert (refunded.status, refunded.amount_refunded_cents) == ("partially_refunded", 500)
    assert refunded.credits_clawed_back == 200 * 500 // 999
    assert db.session.get(User, user2.id).balance == 200 - 200 * 500 // 999


def test_admin_search_finds_a_renewal_by_any_stripe_id_and_the_csv_lists_it(db, client, app):
    user = make_user("searcher@example.com", stripe_customer_id="cus_books_search")
    make_subscription(user, "basic", stripe_subscription_id="sub_books_1")
    deliver(client, "invoice.paid", invoice(user, invoice_id="in_search"))
    (renewal,) = orders_of(db, user, kind="renewal")
    failed = make_order(user, "pro", status="failed")
    admin = admin_of(app)

    for query in ("in_search", "pi_in_search", "sub_books_1", "cus_books_search", str(user.id)):
        page = admin.get("/admin/orders", query_string={"q": query}).get_data(as_text=True)
        assert f"/admin/orders/{renewal.id}" in page, query

    response = admin.get("/admin/orders.csv", query_string={"q": "searcher@"}, buffered=True)
    csv = response.get_data(as_text=True)
    rows = {line.split(",")[0]: line.split(",") for line in csv.splitlines()[1:]}
    assert rows[str(renewal.id)][4] == "renewal" and "in_search" in rows[str(renewal.id)]
    assert rows[str(failed.id)][9] == ""  # a failed order has no net amount
