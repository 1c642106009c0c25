"""`flask stripe audit`: Stripe's charges, refunds and disputes beside the books.

The money moves through the local stand-in (checkout, a dashboard refund, a
dispute), each announced by signed webhooks, so the books are the site's own.
"""

from sqlalchemy import select

from billing_site.books_audit import Booked, compare
from billing_site.models import Order
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user


def audit(app, since="30d"):
    return app.test_cli_runner().invoke(args=["stripe", "audit", "--since", since])


def buy(app, client, pack="pro") -> Order:
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    response = client.post(f"/checkout/pack/{pack}", data={"csrf_token": token})
    session_id = response.headers["Location"].rsplit("/", 1)[-1]
    app.extensions["stripe_gateway"].pay_checkout_session(session_id)
    return order_for(session_id)


def order_for(session_id: str) -> Order:
    from billing_site.extensions import db

    db.session.expire_all()
    return db.session.scalars(select(Order).where(Order.checkout_session_id == session_id)).one()


def charge(charge_id="ch_1", amount=2000, refunded=0, **fields) -> dict:
    return {
        "id": charge_id,
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "usd",
        "paid": True,
        "status": "succeeded",
        "payment_intent": f"pi_{charge_id}",
        "created": 1,
        "metadata": {},
        **fields,
    }


def booked(order_id=1, amount=2000, refunded=0, live=0, **fields) -> Booked:
    values = {
        "order_id": order_id,
        "kind": "pack",
        "status": "paid",
        "amount_cents": amount,
        "amount_refunded_cents": refunded,
        "charge_id": "ch_1",
        "payment_intent_id": "pi_ch_1",
        "invoice_id": None,
        "live_credits": live,
        "granted_credits": 100,
    }
    return Booked(**{**values, **fields})


def kinds(report) -> list[str]:
    return [d.kind for d in report.differences]


# --- the rules, as values ------------------------------------------------------------


def test_matching_books_have_no_difference():
    assert compare([charge()], [], [], [booked(live=100)], {}, {}).differences == []


def test_a_charge_never_booked_and_a_payment_with_no_charge_are_both_named():
    report = compare(
        [charge("ch_2")], [], [], [booked(charge_id="ch_1", payment_intent_id=None)], {}, {}
    )
    assert kinds(report) == ["unbooked_charge", "no_charge"]


def test_amounts_refunds_and_live_credits_for_a_refunded_charge_are_differences():
    report = compare([charge(refunded=2000)], [], [], [booked(amount=2500, live=40)], {}, {})
    assert kinds(report) == ["amount", "refunded", "credits"]
    assert "booked 2500, Stripe took 2000" in report.differences[0].message


def test_a_refund_or_dispute_the_site_never_booked_is_a_difference():
    refund = {"id": "re_1", "amount": 500, "charge": "ch_1", "status": "succeeded"}
    dispute = {"id": "dp_1", "amount": 2000, "charge": "ch_1", "status": "lost"}
    report = compare([charge()], [refund], [dispute], [booked()], {}, {})
    assert kinds(report) == ["refund", "dispute"]


def test_a_refund_booked_in_the_window_that_stripe_never_made_is_a_difference():
    from datetime import UTC, datetime, timedelta

    from billing_site.models import Refund

    since = datetime(2026, 11, 1, tzinfo=UTC)
    made = Refund(
        order_id=1, amount_cents=500, status="succeeded", created_at=since + timedelta(days=1)
    )
    invented = Refund(order_id=1, amount_cents=700, status="succeeded", created_at=made.created_at)
    older = Refund(order_id=1, amount_cents=900, status="succeeded", created_at=since)
    failed = Refund(order_id=1, amount_cents=300, status="failed", created_at=made.created_at)
    booked_refunds = {"re_1": made, "re_2": invented, "re_old": older, "re_3": failed}
    at_stripe = [{"id": "re_1", "amount": 500, "charge": "ch_1", "status": "succeeded"}]

    report = compare(
        [charge(refunded=500)], at_stripe, [], [booked(refunded=500)], booked_refunds, {},
        since=since,
    )  # fmt: skip

    assert [(d.kind, d.stripe_id) for d in report.differences] == [("refund_not_at_stripe", "re_2")]
    assert "booked a refund of 700 that Stripe never made" in report.differences[0].message


def invoice(invoice_id="in_1", intent="pi_ch_1", discount=0, **fields) -> dict:
    """A paid invoice with its payments expanded, as the audit lists them."""
    return {
        "id": invoice_id,
        "status": "paid",
        "currency": "usd",
        "subtotal": 2000 + discount,
        "total": 2000,
        "total_discount_amounts": [{"amount": discount, "discount": "di_1"}] if discount else [],
        "payments": {"data": [{"payment": {"type": "payment_intent", "payment_intent": intent}}]},
        **fields,
    }


def test_a_renewal_charge_naming_no_invoice_is_paired_through_the_invoices_payments():
    # Stripe's invoice.paid does not include `payments`: the renewal was booked
    # by its invoice id alone, and since API 2025-03-31 the charge names no invoice.
    renewal = booked(kind="renewal", charge_id=None, payment_intent_id=None, invoice_id="in_1")

    report = compare([charge()], [], [], [renewal], {}, {}, invoices=[invoice()])

    assert report.differences == [] and report.matched == 1


def test_a_discount_booked_unlike_the_invoices_is_a_difference():
    first = booked(kind="subscription", invoice_id="in_1", discount_cents=0)

    report = compare([charge()], [], [], [first], {}, {}, invoices=[invoice(discount=2000)])

    assert kinds(report) == ["discount"]
    assert report.differences[0].message == "booked a discount of 0, Stripe's is 2000"


def test_a_charge_in_another_currency_than_booked_is_a_difference():
    report = compare([charge(currency="eur")], [], [], [booked()], {}, {})
    assert kinds(report) == ["amount"]


# --- through the stand-in and the command ---------------------------------------------


def test_after_a_purchase_a_dashboard_refund_and_a_won_dispute_the_books_equal_stripe(
    app, db, client
):
    log_in(client, make_user("books@example.com"))
    gateway = app.extensions["stripe_gateway"]
    refunded = buy(app, client, "starter")
    gateway.refund_in_dashboard(refunded.charge_id, 200)
    disputed = buy(app, client, "pro")
    [opened, _] = gateway.open_dispute(disputed.charge_id)
    gateway.close_dispute(opened["data"]["object"]["id"], won=True)

    result = audit(app)

    assert result.exit_code == 0, result.output
    assert "2 charge(s), 1 refund(s), 1 dispute(s)" in result.output
    assert "2 matched to a charge" in result.output
    assert result.output.strip().endswith("No differences.")


def test_an_amount_edited_in_the_database_is_found_and_the_exit_status_says_so(app, db, client):
    log_in(client, make_user("planted@example.com"))
    order = buy(app, client, "pro")
    order.amount_cents = 1999
    db.session.commit()

    result = audit(app)

    assert result.exit_code == 1
    assert (
        f"DIFF amount          {order.charge_id} order {order.id}: booked 1999, Stripe took 2000"
        in (result.output)
    )
    assert "1 difference(s)." in result.output


def test_a_refund_made_in_stripe_but_lost_on_the_way_is_found(app, db, client):
    log_in(client, make_user("lost@example.com"))
    order = buy(app, client, "pro")
    gateway = app.extensions["stripe_gateway"]
    with gateway._state() as state:  # a refund whose webhook never arrived
        gateway._refund_charge(state, state["charges"][order.charge_id], {"amount": None})

    result = audit(app)

    assert result.exit_code == 1
    assert "DIFF refunded" in result.output
    assert "DIFF credits" in result.output  # the pack's credits are still live


def test_the_admin_page_shows_the_same_comparison(app, db, client):
    log_in(client, make_user("admin@example.com", is_admin=True))
    page = client.get("/admin/books?since=30d")
    assert page.status_code == 200
    assert "No differences." in page.get_data(as_text=True)
    assert client.get("/admin/books?since=soon").status_code == 400
