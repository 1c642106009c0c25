"""The shared Stripe test helpers build what Stripe would send."""

from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, stripe_object


def test_checkout_session_for_an_order_carries_its_ids(db):
    order = make_order(make_user(), "pro")
    session = checkout_session(order)
    assert session["object"] == "checkout.session"
    assert session["metadata"] == {"order_id": str(order.id), "user_id": str(order.user_id)}
    assert session["amount_total"] == 2000
    event = make_event("checkout.session.completed", session)
    assert event["data"]["object"]["id"] == order.checkout_session_id
    assert event["object"] == "event"


def test_fixture_objects_are_stripes_shapes():
    assert stripe_object("charge")["object"] == "charge"
    assert stripe_object("invoice")["object"] == "invoice"
