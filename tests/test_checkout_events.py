"""Checkout Session and PaymentIntent events: rows 12, 17, 18 and 19 of the matrix."""

import logging

from sqlalchemy import func, select

from billing_site.models import CreditLot, LedgerEntry, Order, StripeEvent, User
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event, stripe_object


def count(db, model, *criteria) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def deliver(client, event_type, obj, **kwargs):
    event = make_event(event_type, obj, **kwargs)
    response = post_event(client, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def order_without_session_id(db, user, item_id="pro") -> Order:
    """An order whose Checkout Session id was never stored (the write was lost)."""
    order = make_order(user, item_id)
    order.checkout_session_id = None
    db.session.commit()
    return order


def session_with(order, payment_status="paid", **changes) -> dict:
    """checkout_session() with fields it sets itself (id, status) changed too."""
    session = checkout_session(order, payment_status=payment_status)
    session.update(changes)
    return session


def payment_intent_for(order, **changes) -> dict:
    return stripe_object(
        "payment_intent",
        id=f"pi_for_order_{order.id}",
        amount=order.amount_cents,
        metadata={"order_id": str(order.id), "user_id": str(order.user_id)},
        **changes,
    )


# --- 12: two events about one session ------------------------------------------------


def test_completed_and_async_succeeded_for_one_session_grant_once(db, client):
    user = make_user()
    order = make_order(user, "pro")
    session = checkout_session(order)

    first = deliver(client, "checkout.session.completed", session)
    second = deliver(client, "checkout.session.async_payment_succeeded", session)

    assert (first, second) == ("fulfilled", "noop: order already paid")
    assert fresh(db, User, user.id).balance == 100
    assert count(db, CreditLot, CreditLot.user_id == user.id) == 1
    assert count(db, StripeEvent, StripeEvent.status == "processed") == 2


# --- 17: delayed payment methods ------------------------------------------------------


def test_unpaid_completion_waits_and_async_success_grants_once(db, client):
    user = make_user()
    order = make_order(user, "enterprise")

    waiting = deliver(
        client, "checkout.session.completed", checkout_session(order, payment_status="unpaid")
    )
    assert waiting == "awaiting_payment"
    assert fresh(db, User, user.id).balance == 0
    assert fresh(db, Order, order.id).status == "pending"

    paid = deliver(client, "checkout.session.async_payment_succeeded", checkout_session(order))
    assert paid == "fulfilled"
    assert fresh(db, User, user.id).balance == 300
    assert count(db, LedgerEntry, LedgerEntry.user_id == user.id) == 1


def test_unpaid_completion_then_async_failure_fails_the_order_with_no_credits(db, client):
    user = make_user()
    order = make_order(user, "pro")

    deliver(client, "checkout.session.completed", checkout_session(order, payment_status="unpaid"))
    outcome = deliver(
        client,
        "checkout.session.async_payment_failed",
        checkout_session(order, payment_status="unpaid"),
    )

    assert outcome == "failed"
    failed = fresh(db, Order, order.id)
    assert failed.status == "failed"
    assert "did not go through" in failed.failure_reason
    assert fresh(db, User, user.id).balance == 0
    assert count(db, CreditLot) == 0


# --- 18: expired sessions -------------------------------------------------------------


def test_expired_session_expires_the_order(db, client):
    user = make_user()
    order = make_order(user, "starter")

    session = session_with(order, payment_status="unpaid", status="expired")
    outcome = deliver(client, "checkout.session.expired", session)

    assert outcome == "expired"
    assert fresh(db, Order, order.id).status == "expired"
    assert fresh(db, User, user.id).balance == 0


def test_expiry_after_payment_changes_nothing(db, client):
    user = make_user()
    order = make_order(user, "starter")
    deliver(client, "checkout.session.completed", checkout_session(order))

    deliver(client, "checkout.session.expired", session_with(order, status="expired"))

    assert fresh(db, Order, order.id).status == "paid"
    assert fresh(db, User, user.id).balance == 20


# --- 19: a session the site never made ------------------------------------------------


def test_session_the_site_never_made_is_acknowledged_and_grants_nothing(db, client, caplog):
    make_user()
    stranger = stripe_object("checkout_session", payment_status="paid", status="complete")

    with caplog.at_level(logging.INFO, logger="billing_site.webhook"):
        event = make_event("checkout.session.completed", stranger)
        response = post_event(client, event)

    assert response.status_code == 200
    assert response.get_json()["outcome"] == "unknown_order"
    assert count(db, CreditLot) == 0
    assert count(db, LedgerEntry) == 0
    assert fresh(db, StripeEvent, event["id"]).status == "processed"
    assert any("outcome=unknown_order" in r.getMessage() for r in caplog.records)


def test_session_naming_another_customers_order_grants_nothing(db, client):
    owner, other = make_user(), make_user()
    order = order_without_session_id(db, owner)
    forged = session_with(order, id="cs_test_forged")
    forged["metadata"]["user_id"] = str(other.id)

    assert deliver(client, "checkout.session.completed", forged) == "unknown_order"
    assert fresh(db, Order, order.id).status == "pending"
    assert count(db, CreditLot) == 0


def test_session_found_by_its_metadata_when_its_id_was_never_stored(db, client):
    user = make_user()
    order = order_without_session_id(db, user)

    session = session_with(order, id="cs_test_lost_write")
    assert deliver(client, "checkout.session.completed", session) == "fulfilled"
    assert fresh(db, Order, order.id).checkout_session_id == "cs_test_lost_write"
    assert fresh(db, User, user.id).balance == 100


# --- payment intents ---------------------------------------------------------------------


def test_payment_failed_marks_the_order_failed_with_the_reason(db, client):
    user = make_user()
    order = make_order(user, "pro")
    error = {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}

    intent = payment_intent_for(order, status="requires_payment_method", last_payment_error=error)
    outcome = deliver(client, "payment_intent.payment_failed", intent)

    assert outcome == "failed"
    failed = fresh(db, Order, order.id)
    assert (failed.status, failed.failure_reason) == ("failed", "Your card was declined.")
    assert failed.payment_intent_id == intent["id"]
    assert fresh(db, User, user.id).balance == 0


def test_paying_with_another_card_after_a_decline_still_grants(db, client):
    user = make_user()
    order = make_order(user, "pro")
    declined = payment_intent_for(
        order, last_payment_error={"message": "Your card has insufficient funds."}
    )
    deliver(client, "payment_intent.payment_failed", declined)

    assert deliver(client, "checkout.session.completed", checkout_session(order)) == "fulfilled"
    paid = fresh(db, Order, order.id)
    assert (paid.status, paid.failure_reason) == ("paid", None)
    assert fresh(db, User, user.id).balance == 100


def test_late_payment_failure_never_undoes_a_paid_order(db, client):
    user = make_user()
    order = make_order(user, "pro")
    deliver(client, "checkout.session.completed", checkout_session(order))

    late = payment_intent_for(order, last_payment_error={"message": "Your card was declined."})
    assert deliver(client, "payment_intent.payment_failed", late) == "noop: order already paid"
    assert fresh(db, Order, order.id).status == "paid"
    assert fresh(db, User, user.id).balance == 100


def test_payment_succeeded_records_the_charge_for_refunds(db, client):
    user = make_user()
    order = make_order(user, "pro")
    deliver(client, "checkout.session.completed", checkout_session(order))

    intent = payment_intent_for(order, status="succeeded", latest_charge="ch_for_the_order")
    assert deliver(client, "payment_intent.succeeded", intent) == "recorded: charge id"

    recorded = fresh(db, Order, order.id)
    assert (recorded.charge_id, recorded.status) == ("ch_for_the_order", "paid")
    assert fresh(db, User, user.id).balance == 100


def test_payment_intent_for_an_unknown_order_changes_nothing(db, client):
    intent = stripe_object("payment_intent", latest_charge="ch_unknown")
    assert deliver(client, "payment_intent.succeeded", intent) == "unknown_order"
    assert count(db, Order) == 0
