"""What Stripe tells the site about refunds (TESTING.md rows 24 and 30), delivered signed
to the real webhook."""

from sqlalchemy import select

from billing_site.models import CreditLot
from tests.admin_actions import inside, order_state, paid_order
from tests.stripe_events import make_event, post_event, stripe_object


def charge_for(order_id: int, amount_refunded: int, amount: int = 2000) -> dict:
    return stripe_object(
        "charge",
        id=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount,
    )


def refund_for(order_id: int, refund_id: str, amount: int, status: str, **changes) -> dict:
    return stripe_object(
        "refund",
        id=refund_id,
        amount=amount,
        charge=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        status=status,
        **changes,
    )


def deliver(client, event_type: str, obj: dict, *, event_id: str | None = None):
    response = post_event(client, make_event(event_type, obj, event_id=event_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_cumulative_charge_refunded_claws_back_only_the_difference(app, client):
    order_id, _ = paid_order(app, "pro")  # $20.00, 100 credits
    thirty = make_event("charge.refunded", charge_for(order_id, 600))
    fifty = make_event("charge.refunded", charge_for(order_id, 1000))
    for event in (thirty, thirty, fifty, fifty):
        assert post_event(client, event).status_code == 200
    # The same totals again under new event ids (Stripe may send two events), and late.
    deliver(client, "charge.refunded", charge_for(order_id, 1000))
    deliver(client, "charge.refunded", charge_for(order_id, 600))
    state = order_state(app, order_id)
    assert state["amount_refunded_cents"] == 1000
    assert state["credits_clawed_back"] == 50
    assert state["balance"] == 50
    assert state["ledger"] == [("grant", 100), ("clawback", -30), ("clawback", -20)]
    assert state["status"] == "partially_refunded"
    # Refunds made in the Stripe dashboard are recorded so the admin sees them.
    assert state["refunds"] == [(1, "succeeded", 600), (2, "succeeded", 400)]


def test_a_dashboard_refund_then_its_refund_event_is_applied_once(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "charge.refunded", charge_for(order_id, 2000))
    deliver(client, "refund.created", refund_for(order_id, "re_dashboard", 2000, "succeeded"))
    deliver(client, "refund.updated", refund_for(order_id, "re_dashboard", 2000, "succeeded"))
    state = order_state(app, order_id)
    assert state["refunds"] == [(1, "succeeded", 2000)]
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]
    assert state["status"] == "refunded"


def test_a_refund_event_before_charge_refunded_is_applied_once(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "refund.created", refund_for(order_id, "re_first", 500, "succeeded"))
    deliver(client, "charge.refunded", charge_for(order_id, 500))
    state = order_state(app, order_id)
    assert state["refunds"] == [(1, "succeeded", 500)]
    assert state["ledger"] == [("grant", 100), ("clawback", -25)]


def test_a_refund_that_fails_later_gives_the_credits_back_once(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "refund.created", refund_for(order_id, "re_will_fail", 1000, "succeeded"))
    assert order_state(app, order_id)["balance"] == 50
    failed = refund_for(
        order_id, "re_will_fail", 1000, "failed", failure_reason="expired_or_canceled_card"
    )
    deliver(client, "refund.updated", failed)
    deliver(client, "refund.failed", failed)
    deliver(client, "refund.updated", failed)
    state = order_state(app, order_id)
    assert state["balance"] == 100
    assert state["amount_refunded_cents"] == 0
    assert state["credits_clawed_back"] == 0
    assert state["status"] == "paid"
    assert state["refunds"] == [(1, "failed", 1000)]
    assert state["ledger"] == [("grant", 100), ("clawback", -50), ("restore", 50)]
    with inside(app) as session:
        lot = session.scalar(select(CreditLot).where(CreditLot.source == "refund_reversal"))
        assert (lot.credits_granted, lot.order_id) == (50, order_id)


def test_refund_events_for_a_charge_the_site_never_made_change_nothing(app, client):
    order_id, _ = paid_order(app, "pro")
    stranger = stripe_object(
        "charge", id="ch_unknown", payment_intent="pi_unknown", amount_refunded=100
    )
    deliver(client, "charge.refunded", stranger)
    deliver(
        client,
        "refund.updated",
        stripe_object("refund", id="re_unknown", charge="ch_unknown", status="failed"),
    )
    state = order_state(app, order_id)
    assert state["ledger"] == [("grant", 100)]
    assert state["refunds"] == []
