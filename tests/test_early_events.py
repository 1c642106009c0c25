"""Refund and dispute events that reach the site before the payment they are about.

Stripe delivers in any order. If `charge.refunded` or `charge.dispute.created`
arrives while the order is still pending (its checkout.session.completed failed
or is late), nothing matches it yet; the order must not end up paid with its
credits kept once the payment is fulfilled.
"""

from sqlalchemy import select

from billing_site.models import Order
from tests.admin_actions import inside, order_state
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event, stripe_object
from tests.test_success_page import start_local_checkout, success_page


def pending_order(app) -> tuple[int, dict]:
    """A customer's pending Pro pack order ($20.00, 100 credits) and its paid session."""
    with inside(app):
        order = make_order(make_user(), "pro")
        return order.id, checkout_session(order)


def charge_refunded(session: dict, amount_refunded: int) -> dict:
    return make_event(
        "charge.refunded",
        stripe_object(
            "charge",
            id=f"ch_for_{session['payment_intent']}",
            payment_intent=session["payment_intent"],
            amount=2000,
            amount_captured=2000,
            amount_refunded=amount_refunded,
            refunded=amount_refunded >= 2000,
        ),
    )


def dispute_opened(session: dict) -> dict:
    return make_event(
        "charge.dispute.created",
        stripe_object(
            "dispute",
            id="dp_early_1",
            charge=f"ch_for_{session['payment_intent']}",
            payment_intent=session["payment_intent"],
            amount=2000,
            currency="usd",
            status="needs_response",
        ),
    )


def deliver(client, event: dict) -> dict:
    response = post_event(client, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_full_refund_reported_before_the_payment_takes_back_the_credits_at_fulfilment(
    app, client
):
    order_id, session = pending_order(app)

    early = deliver(client, charge_refunded(session, 2000))
    assert early["outcome"] == "unknown_order"
    assert order_state(app, order_id)["ledger"] == []

    paid = deliver(client, make_event("checkout.session.completed", session))

    assert paid["outcome"] == "fulfilled; applied 1 earlier event(s)"
    state = order_state(app, order_id)
    assert state["status"] == "refunded"
    assert state["amount_refunded_cents"] == 2000
    assert state["balance"] == 0
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]


def test_redeliveries_after_a_late_fulfilment_change_nothing(app, client):
    order_id, session = pending_order(app)
    refunded = charge_refunded(session, 500)
    completed = make_event("checkout.session.completed", session)
    deliver(client, refunded)
    deliver(client, completed)

    assert deliver(client, refunded)["outcome"] == "duplicate"
    assert deliver(client, completed)["outcome"] == "duplicate"
    assert deliver(client, charge_refunded(session, 500))["outcome"] == "noop: already applied"

    state = order_state(app, order_id)
    assert state["status"] == "partially_refunded"
    assert state["balance"] == 75
    assert state["ledger"] == [("grant", 100), ("clawback", -25)]


def test_a_dispute_opened_before_the_payment_takes_back_the_credits_at_fulfilment(app, client):
    order_id, session = pending_order(app)
    deliver(client, dispute_opened(session))

    deliver(client, make_event("checkout.session.completed", session))

    state = order_state(app, order_id)
    assert state["status"] == "disputed"
    assert state["balance"] == 0
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]


def test_an_early_payment_failure_does_not_fail_the_order_paid_after_it(app, client):
    order_id, session = pending_order(app)
    failed = stripe_object(
        "payment_intent",
        id=session["payment_intent"],
        status="requires_payment_method",
        metadata={"order_id": str(order_id)},
    )
    deliver(client, make_event("payment_intent.payment_failed", failed))

    deliver(client, make_event("checkout.session.completed", session))

    state = order_state(app, order_id)
    assert state["status"] == "paid"
    assert state["balance"] == 100


def test_the_success_page_fulfilling_first_also_applies_the_early_refund(app, db, client):
    session_id = start_local_checkout(app, client, make_user())
    events = app.extensions["stripe_gateway"].pay_checkout_session(session_id, deliver=False)
    session = next(e for e in events if e["type"] == "checkout.session.completed")
    deliver(client, charge_refunded(session["data"]["object"], 2000))

    assert success_page(client, session_id).status_code == 200

    order = db.session.scalar(select(Order).where(Order.checkout_session_id == session_id))
    assert (order.status, order.amount_refunded_cents) == ("refunded", 2000)
    assert order_state(app, order.id)["ledger"] == [("grant", 100), ("clawback", -100)]
