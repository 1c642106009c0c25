"""Disputes (TESTING.md row 31): an open dispute takes the order's credits, a won one gives
them back, each once, whatever order and however often Stripe delivers."""

from sqlalchemy import select

from billing_site.models import Dispute
from tests.admin_actions import admin_client, inside, order_state, paid_order
from tests.stripe_events import make_event, post_event, stripe_object

DUE_BY = 1893456000  # 2030-01-01 00:00 UTC


def dispute_for(order_id: int, status: str, dispute_id: str = "dp_test_1") -> dict:
    return stripe_object(
        "dispute",
        id=dispute_id,
        amount=2000,
        charge=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        status=status,
        reason="fraudulent",
        evidence_details={"due_by": DUE_BY, "has_evidence": False, "past_due": False},
    )


def deliver(client, event_type: str, obj: dict) -> None:
    response = post_event(client, make_event(event_type, obj))
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_dispute_takes_the_credits_and_a_won_dispute_gives_them_back(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "charge.dispute.created", dispute_for(order_id, "needs_response"))
    deliver(client, "charge.dispute.created", dispute_for(order_id, "needs_response"))
    taken = order_state(app, order_id)
    assert taken["status"] == "disputed"
    assert taken["balance"] == 0
    assert taken["ledger"] == [("grant", 100), ("clawback", -100)]

    deliver(client, "charge.dispute.closed", dispute_for(order_id, "won"))
    deliver(client, "charge.dispute.closed", dispute_for(order_id, "won"))
    # A late update from before the close does not reopen it.
    deliver(client, "charge.dispute.updated", dispute_for(order_id, "under_review"))
    state = order_state(app, order_id)
    assert state["status"] == "paid"
    assert state["balance"] == 100
    assert state["ledger"] == [("grant", 100), ("clawback", -100), ("restore", 100)]
    assert sum(delta for _, delta in state["ledger"][1:]) == 0
    with inside(app) as session:
        dispute = session.scalar(select(Dispute))
        assert (dispute.status, dispute.order_id, dispute.amount_cents) == ("won", order_id, 2000)
        assert dispute.evidence_due_by.year == 2030


def test_a_lost_dispute_keeps_the_credits_taken(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "charge.dispute.created", dispute_for(order_id, "needs_response"))
    deliver(client, "charge.dispute.closed", dispute_for(order_id, "lost"))
    state = order_state(app, order_id)
    assert state["status"] == "disputed"
    assert state["balance"] == 0
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]


def test_a_dispute_after_a_partial_refund_takes_only_what_is_left(app, client):
    order_id, _ = paid_order(app, "pro")
    charge = stripe_object(
        "charge",
        id=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        amount=2000,
        amount_refunded=500,
    )
    deliver(client, "charge.refunded", charge)
    deliver(client, "charge.dispute.created", dispute_for(order_id, "needs_response"))
    assert order_state(app, order_id)["ledger"] == [
        ("grant", 100),
        ("clawback", -25),
        ("clawback", -75),
    ]
    deliver(client, "charge.dispute.closed", dispute_for(order_id, "won"))
    state = order_state(app, order_id)
    assert state["balance"] == 75
    assert state["status"] == "partially_refunded"


def test_the_disputes_page_lists_status_amount_and_deadline(app, client):
    order_id, _ = paid_order(app, "pro")
    deliver(client, "charge.dispute.created", dispute_for(order_id, "needs_response"))
    admin, _ = admin_client(app)
    html = admin.get("/admin/disputes").get_data(as_text=True)
    assert "dp_test_1" in html
    assert f'href="/admin/orders/{order_id}"' in html
    assert "needs response" in html
    assert "$20.00" in html
    assert "1 Jan 2030, 00:00 UTC" in html
    order_page = admin.get(f"/admin/orders/{order_id}").get_data(as_text=True)
    assert "dp_test_1" in order_page
    overview = admin.get("/admin/").get_data(as_text=True)
    assert '<a href="/admin/disputes">1</a>' in overview
