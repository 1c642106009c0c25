"""The local stand-in for Stripe: Stripe's shapes, idempotency, shared state, signed events."""

import multiprocessing
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from billing_site.config import ConfigError
from billing_site.local_stripe import LocalGateway, add_month
from billing_site.models import Order, StripeEvent, User
from billing_site.stripe_gateway import GatewayError, StripeGateway
from tests.factories import make_user


def checkout_params(mode="payment", amount=2000, order_id=1, user_id=1, customer=None) -> dict:
    price_data = {"currency": "usd", "unit_amount": amount, "product_data": {"name": "Pro Pack"}}
    params = {
        "mode": mode,
        "line_items": [{"price_data": price_data, "quantity": 1}],
        "metadata": {"order_id": order_id, "user_id": user_id},
        "client_reference_id": str(user_id),
        "customer": customer,
        "success_url": "http://localhost/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://localhost/checkout/cancel",
        "allow_promotion_codes": True,
    }
    if mode == "subscription":
        price_data["recurring"] = {"interval": "month"}
        params["subscription_data"] = {"metadata": {"order_id": order_id, "user_id": user_id}}
    return params


@pytest.fixture
def gateway(app, db) -> LocalGateway:
    return app.extensions["stripe_gateway"]


def paid_session(gateway, mode="payment", key="checkout-order-1", **kwargs) -> dict:
    session = gateway.create_checkout_session(checkout_params(mode, **kwargs), idempotency_key=key)
    gateway.pay_checkout_session(session["id"], deliver=False)
    return gateway.retrieve_checkout_session(session["id"])


def test_without_a_key_the_site_uses_the_local_gateway_and_with_one_real_stripe(make_app):
    assert make_app().extensions["stripe_gateway"].is_local
    assert isinstance(
        make_app(STRIPE_SECRET_KEY="sk_test_1").extensions["stripe_gateway"], StripeGateway
    )


def test_the_local_gateway_refuses_to_run_in_production(tmp_path):
    with pytest.raises(ConfigError):
        LocalGateway({"APP_ENV": "production", "LOCAL_STRIPE_STATE_FILE": str(tmp_path / "s")})


def test_checkout_session_is_stripe_shaped_and_points_at_the_local_checkout(gateway):
    session = gateway.create_checkout_session(checkout_params(), idempotency_key="checkout-order-1")

    assert session["object"] == "checkout.session"
    assert session["id"].startswith("cs_test_")
    assert session["url"] == f"http://localhost/dev/checkout/{session['id']}"
    assert (session["status"], session["payment_status"]) == ("open", "unpaid")
    assert (session["amount_total"], session["currency"], session["mode"]) == (
        2000,
        "usd",
        "payment",
    )
    assert session["metadata"] == {"order_id": "1", "user_id": "1"}
    assert session["expires_at"] > session["created"]
    assert gateway.retrieve_checkout_session(session["id"]) == session


def test_the_same_idempotency_key_gives_the_same_session(gateway):
    first = gateway.create_checkout_session(checkout_params(), idempotency_key="checkout-order-7")
    again = gateway.create_checkout_session(checkout_params(), idempotency_key="checkout-order-7")
    other = gateway.create_checkout_session(checkout_params(), idempotency_key="checkout-order-8")

    assert again["id"] == first["id"]
    assert other["id"] != first["id"]


def test_one_customer_per_user_however_often_it_is_asked(gateway):
    first = gateway.create_customer(email="ada@example.com", user_id=3)
    again = gateway.create_customer(email="ada@example.com", user_id=3)

    assert first["id"] == again["id"]
    assert first["object"] == "customer"
    assert first["metadata"] == {"user_id": "3"}


def test_unknown_objects_raise_the_gateways_error(gateway):
    for retrieve in (
        gateway.retrieve_checkout_session,
        gateway.retrieve_subscription,
        gateway.retrieve_refund,
    ):
        with pytest.raises(GatewayError) as raised:
            retrieve("xx_missing")
        assert raised.value.code == "resource_missing"


def test_stripe_would_refuse_a_session_without_line_items(gateway):
    params = checkout_params()
    params["line_items"] = []

    with pytest.raises(GatewayError):
        gateway.create_checkout_session(params, idempotency_key="checkout-order-1")


def test_paying_a_pack_completes_the_session_with_a_payment_intent_and_charge(gateway):
    session = gateway.create_checkout_session(checkout_params(), idempotency_key="k1")

    events = gateway.pay_checkout_session(session["id"], deliver=False)

    paid = gateway.retrieve_checkout_session(session["id"])
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
    assert paid["payment_intent"].startswith("pi_")
    assert [e["type"] for e in events] == ["checkout.session.completed", "payment_intent.succeeded"]
    completed, succeeded = events
    assert completed["object"] == "event"
    assert completed["api_version"] == "2026-07-29.dahlia"
    assert completed["data"]["object"]["payment_status"] == "paid"
    intent = succeeded["data"]["object"]
    assert intent["id"] == paid["payment_intent"]
    assert intent["latest_charge"].startswith("ch_")
    assert intent["metadata"]["order_id"] == "1"


def test_paying_twice_announces_nothing_more(gateway):
    session = gateway.create_checkout_session(checkout_params(), idempotency_key="k1")
    gateway.pay_checkout_session(session["id"], deliver=False)

    assert gateway.pay_checkout_session(session["id"], deliver=False) == []
    assert len(list(gateway.list_events(created_since=0))) == 2


def test_declining_fails_a_payment_intent_with_the_reason_and_order_metadata(gateway):
    session = gateway.create_checkout_session(checkout_params(order_id=42), idempotency_key="k1")

    [event] = gateway.decline_checkout_session(session["id"], deliver=False)

    assert event["type"] == "payment_intent.payment_failed"
    intent = event["data"]["object"]
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["message"] == "Your card was declined."
    assert intent["metadata"]["order_id"] == "42"
    assert gateway.retrieve_checkout_session(session["id"])["status"] == "open"


def test_paying_a_subscription_creates_it_and_its_first_paid_invoice(gateway):
    session = gateway.create_checkout_session(
        checkout_params("subscription", amount=999), idempotency_key="k1"
    )

    events = gateway.pay_checkout_session(session["id"], deliver=False)

    assert [e["type"] for e in events] == [
        "customer.subscription.created",
        "invoice.paid",
        "checkout.session.completed",
    ]
    subscription = events[0]["data"]["object"]
    invoice = events[1]["data"]["object"]
    item = subscription["items"]["data"][0]
    assert subscription["status"] == "active"
    assert subscription["metadata"] == {"order_id": "1", "user_id": "1"}
    assert item["current_period_end"] == add_month(item["current_period_start"])
    assert item["price"]["unit_amount"] == 999
    assert invoice["billing_reason"] == "subscription_create"
    assert invoice["status"] == "paid"
    assert invoice["amount_paid"] == 999
    assert invoice["parent"]["subscription_details"]["subscription"] == subscription["id"]
    assert invoice["lines"]["data"][0]["period"] == {
        "start": item["current_period_start"],
        "end": item["current_period_end"],
    }
    completed = events[2]["data"]["object"]
    assert completed["subscription"] == subscription["id"]
    assert gateway.retrieve_subscription(subscription["id"]) == subscription | {
        "latest_invoice": invoice["id"]
    }


def test_renewal_pays_an_invoice_for_the_next_period(gateway):
    session = paid_session(gateway, "subscription", amount=999)
    before = gateway.retrieve_subscription(session["subscription"])["items"]["data"][0]

    paid, updated = gateway.renew_subscription(session["subscription"], deliver=False)

    assert (paid["type"], updated["type"]) == ("invoice.paid", "customer.subscription.updated")
    invoice = paid["data"]["object"]
    assert invoice["billing_reason"] == "subscription_cycle"
    period = invoice["lines"]["data"][0]["period"]
    assert period == {
        "start": before["current_period_end"],
        "end": add_month(before["current_period_end"]),
    }
    item = updated["data"]["object"]["items"]["data"][0]
    assert item["current_period_start"] == before["current_period_end"]
    assert updated["data"]["previous_attributes"]["items"]["data"][0] == before


def test_failed_renewal_makes_the_subscription_past_due_and_a_retry_recovers_it(gateway):
    session = paid_session(gateway, "subscription", amount=999)

    failed, updated = gateway.renew_subscription(
        session["subscription"], succeed=False, deliver=False
    )

    assert failed["type"] == "invoice.payment_failed"
    assert failed["data"]["object"]["status"] == "open"
    assert updated["data"]["object"]["status"] == "past_due"

    paid, recovered = gateway.retry_latest_invoice(session["subscription"], deliver=False)

    assert paid["data"]["object"]["id"] == failed["data"]["object"]["id"]
    assert paid["data"]["object"]["status"] == "paid"
    assert recovered["data"]["object"]["status"] == "active"


def test_cancel_at_period_end_then_renewal_ends_the_subscription(gateway):
    session = paid_session(gateway, "subscription", amount=999)
    subscription_id = session["subscription"]

    changed = gateway.set_cancel_at_period_end(subscription_id, True, idempotency_key="c1")
    [deleted] = gateway.renew_subscription(subscription_id, deliver=False)

    assert changed["cancel_at_period_end"] is True
    assert changed["cancel_at"] == changed["items"]["data"][0]["current_period_end"]
    assert deleted["type"] == "customer.subscription.deleted"
    assert deleted["data"]["object"]["status"] == "canceled"
    with pytest.raises(GatewayError):
        gateway.renew_subscription(subscription_id, deliver=False)


def test_partial_refunds_are_cumulative_on_the_charge(gateway):
    session = paid_session(gateway)

    gateway.create_refund(
        {"payment_intent": session["payment_intent"], "amount": 600}, idempotency_key="refund-1-1"
    )
    gateway.create_refund(
        {"payment_intent": session["payment_intent"], "amount": 400}, idempotency_key="refund-1-2"
    )

    refunded = [
        e["data"]["object"]
        for e in gateway.list_events(created_since=0)
        if e["type"] == "charge.refunded"
    ]
    assert [charge["amount_refunded"] for charge in refunded] == [600, 1000]
    assert [charge["refunded"] for charge in refunded] == [False, False]


def test_a_repeated_refund_request_refunds_once(gateway):
    session = paid_session(gateway)
    params = {"payment_intent": session["payment_intent"]}

    first = gateway.create_refund(params, idempotency_key="refund-1-1")
    again = gateway.create_refund(params, idempotency_key="refund-1-1")

    assert again["id"] == first["id"]
    assert (first["amount"], first["status"]) == (2000, "succeeded")
    assert gateway.retrieve_refund(first["id"]) == first
    types = [e["type"] for e in gateway.list_events(created_since=0)]
    assert types.count("charge.refunded") == 1


def test_refunding_more_than_remains_is_refused(gateway):
    session = paid_session(gateway)
    gateway.create_refund(
        {"payment_intent": session["payment_intent"], "amount": 1500}, idempotency_key="r1"
    )

    with pytest.raises(GatewayError) as raised:
        gateway.create_refund(
            {"payment_intent": session["payment_intent"], "amount": 501}, idempotency_key="r2"
        )
    assert raised.value.code == "amount_too_large"


def test_list_events_starts_at_the_time_asked(gateway):
    paid_session(gateway)
    events = list(gateway.list_events(created_since=0))
    later = int(datetime.now(UTC).timestamp()) + 3600

    assert len(events) == 2
    assert list(gateway.list_events(created_since=later)) == []


def test_portal_session_links_to_the_local_portal(gateway):
    portal = gateway.create_portal_session(
        customer_id="cus_local1", return_url="http://localhost/account"
    )

    assert portal["object"] == "billing_portal.session"
    assert portal["url"] == (
        f"http://localhost/dev/portal?customer=cus_local1&session={portal['id']}"
    )
    assert gateway.retrieve_portal_session(portal["id"])["return_url"] == (
        "http://localhost/account"
    )


def test_state_lives_in_the_file_shared_by_every_gateway_on_it(app, gateway):
    session = gateway.create_checkout_session(checkout_params(), idempotency_key="k1")
    another_process = LocalGateway(dict(app.config))

    assert another_process.retrieve_checkout_session(session["id"]) == session


def test_threads_writing_at_once_lose_nothing(gateway):
    def create_customers(start):
        for user_id in range(start, start + 10):
            gateway.create_customer(email=f"u{user_id}@example.com", user_id=user_id)

    threads = [threading.Thread(target=create_customers, args=(n * 10,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = {gateway.create_customer(email="x", user_id=n)["id"] for n in range(80)}
    assert len(ids) == 80


def _create_customers_in_a_process(config: dict, start: int) -> None:
    gateway = LocalGateway(config)
    for user_id in range(start, start + 10):
        gateway.create_customer(email=f"u{user_id}@example.com", user_id=user_id)


def test_processes_writing_at_once_lose_nothing(tmp_path):
    config = {"SITE_URL": "http://localhost", "LOCAL_STRIPE_STATE_FILE": str(tmp_path / "s.json")}
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_create_customers_in_a_process, args=(config, n * 10))
        for n in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    gateway = LocalGateway(config)
    ids = {gateway.create_customer(email="x", user_id=n)["id"] for n in range(40)}
    assert len(ids) == 40


def test_events_are_delivered_signed_to_the_sites_own_webhook(app, db, gateway):
    user = make_user()
    order = Order(
        user_id=user.id, kind="pack", item_id="pro", amount_cents=2000, currency="usd", credits=100
    )
    db.session.add(order)
    db.session.commit()
    session = gateway.create_checkout_session(
        checkout_params(order_id=order.id, user_id=user.id), idempotency_key="k1"
    )
    order.checkout_session_id = session["id"]
    db.session.commit()  # delivery happens at once outside a request: commit first

    events = gateway.pay_checkout_session(session["id"])

    db.session.expire_all()
    recorded = db.session.scalars(select(StripeEvent).order_by(StripeEvent.received_at)).all()
    assert {row.id for row in recorded} == {event["id"] for event in events}
    assert {row.status for row in recorded} == {"processed"}
    assert db.session.get(Order, order.id).status == "paid"
    assert db.session.get(User, user.id).balance == 100
