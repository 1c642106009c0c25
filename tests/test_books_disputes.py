"""Dispute statuses (issue 12.15): every status Stripe documents is mapped, the latest
event wins, and the credits follow it each way (won then lost takes them again)."""

import time

from billing_site import disputes
from tests.admin_actions import order_state, paid_order
from tests.stripe_events import make_event, post_event, stripe_object

# The dispute statuses of the Stripe API (stripe-python's Dispute.status literal).
STRIPE_DISPUTE_STATUSES = {
    "appeal_needs_response",
    "appeal_under_review",
    "lost",
    "needs_response",
    "prevented",
    "under_review",
    "warning_closed",
    "warning_needs_response",
    "warning_under_review",
    "won",
}


def dispute_for(order_id: int, status: str) -> dict:
    return stripe_object(
        "dispute",
        id="dp_books_1",
        amount=2000,
        charge=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        status=status,
        reason="fraudulent",
        evidence_details={"due_by": 1893456000, "has_evidence": False, "past_due": False},
    )


def deliver(client, order_id: int, status: str, created: int) -> str:
    closed = status in disputes.CLOSED_STATUSES
    event_type = "charge.dispute.closed" if closed else "charge.dispute.updated"
    event = make_event(event_type, dispute_for(order_id, status), created=created)
    response = post_event(client, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def test_every_documented_status_is_mapped_one_way_or_the_other():
    taking, restoring = set(disputes.TAKING_STATUSES), set(disputes.RESTORING_STATUSES)
    assert taking | restoring == STRIPE_DISPUTE_STATUSES
    assert not taking & restoring


def test_won_then_lost_takes_the_credits_again(app, client):
    order_id, _ = paid_order(app, "pro")
    now = int(time.time())
    deliver(client, order_id, "needs_response", now)
    deliver(client, order_id, "won", now + 10)
    deliver(client, order_id, "lost", now + 20)
    deliver(client, order_id, "lost", now + 20)  # repeated: nothing more

    state = order_state(app, order_id)
    assert state["status"] == "disputed"
    assert state["balance"] == 0
    assert state["ledger"] == [
        ("grant", 100),
        ("clawback", -100),
        ("restore", 100),
        ("clawback", -100),
    ]


def test_an_appeal_keeps_the_credits_taken_until_it_is_won(app, client):
    order_id, _ = paid_order(app, "pro")
    now = int(time.time())
    for offset, status in enumerate(["needs_response", "lost", "appeal_needs_response"]):
        deliver(client, order_id, status, now + offset)
    assert order_state(app, order_id)["balance"] == 0
    deliver(client, order_id, "appeal_under_review", now + 3)
    assert order_state(app, order_id)["balance"] == 0

    deliver(client, order_id, "won", now + 4)

    state = order_state(app, order_id)
    assert (state["status"], state["balance"]) == ("paid", 100)


def test_a_prevented_dispute_gives_back_what_its_inquiry_held(app, client):
    order_id, _ = paid_order(app, "pro")
    now = int(time.time())
    deliver(client, order_id, "warning_needs_response", now)
    assert order_state(app, order_id)["balance"] == 0

    deliver(client, order_id, "prevented", now + 5)

    state = order_state(app, order_id)
    assert (state["status"], state["balance"]) == ("paid", 100)


def test_an_older_event_arriving_late_changes_nothing(app, client):
    order_id, _ = paid_order(app, "pro")
    now = int(time.time())
    deliver(client, order_id, "needs_response", now)
    deliver(client, order_id, "won", now + 10)

    outcome = deliver(client, order_id, "under_review", now + 5)

    assert outcome.startswith("noop: stale event")
    state = order_state(app, order_id)
    assert (state["status"], state["balance"]) == ("paid", 100)
