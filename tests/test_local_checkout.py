"""Buying through the local test checkout: the whole money path without Stripe keys.

Pay, Decline and the portal's buttons announce what happened by signed webhooks
to the site's own /stripe/webhook, so these tests cover the production handlers.
"""

from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from billing_site.models import CreditLot, Order, StripeEvent, Subscription, User
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user


def csrf(client, path="/auth/login") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def start_checkout(client, path="/checkout/pack/pro") -> str:
    """Press Buy or Subscribe; returns the local checkout page's path."""
    response = client.post(path, data={"csrf_token": csrf(client)})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("http://localhost/dev/checkout/cs_test_")
    return path_of(response.headers["Location"])


def press(client, checkout_path: str, button: str):
    return client.post(
        f"{checkout_path}/{button}", data={"csrf_token": csrf(client, checkout_path)}
    )


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def event_types(db) -> list[str]:
    return db.session.scalars(select(StripeEvent.type).order_by(StripeEvent.received_at)).all()


@pytest.fixture
def customer(db, client):
    user = make_user("local@example.com")
    log_in(client, user)
    return user


def test_test_checkout_page_is_clearly_labelled_and_shows_the_item(db, client, customer):
    checkout_path = start_checkout(client)

    page = client.get(checkout_path).get_data(as_text=True)

    assert "TEST CHECKOUT — no real payment" in page
    assert "Pro Pack" in page
    assert "$20.00" in page
    assert 'id="pay-button"' in page and 'id="decline-button"' in page
    assert 'href="http://localhost/checkout/cancel"' in page
    assert 'name="csrf_token"' in page


def test_paying_delivers_the_webhook_grants_once_and_lands_on_the_success_page(
    db, client, customer
):
    checkout_path = start_checkout(client)
    session_id = checkout_path.rsplit("/", 1)[-1]

    paid = press(client, checkout_path, "pay")

    assert paid.status_code == 303
    assert paid.headers["Location"] == f"http://localhost/checkout/success?session_id={session_id}"
    assert event_types(db) == ["checkout.session.completed", "payment_intent.succeeded"]
    order = db.session.scalars(select(Order)).one()
    assert order.status == "paid"
    assert order.charge_id is not None
    assert fresh(db, User, customer.id).balance == 100

    success = client.get(path_of(paid.headers["Location"]))
    again = press(client, checkout_path, "pay")  # a double-click on Pay

    assert "Payment received — 100 credits added" in success.get_data(as_text=True)
    assert again.status_code == 303
    assert fresh(db, User, customer.id).balance == 100
    assert db.session.scalar(select(func.count()).select_from(CreditLot)) == 1


def test_declining_fails_the_order_with_the_reason_and_grants_nothing(db, client, customer):
    checkout_path = start_checkout(client)

    declined = press(client, checkout_path, "decline")

    assert declined.status_code == 402
    assert "Your card was declined" in declined.get_data(as_text=True)
    order = db.session.scalars(select(Order)).one()
    assert (order.status, order.failure_reason) == ("failed", "Your card was declined.")
    assert fresh(db, User, customer.id).balance == 0


def test_another_card_after_a_decline_pays_the_same_order(db, client, customer):
    checkout_path = start_checkout(client, "/checkout/pack/starter")
    press(client, checkout_path, "decline")

    paid = press(client, checkout_path, "pay")

    assert paid.status_code == 303
    order = fresh(db, Order, db.session.scalars(select(Order.id)).one())
    assert order.status == "paid"
    assert fresh(db, User, customer.id).balance == 20


def test_pay_without_a_csrf_token_is_refused(db, client, customer):
    checkout_path = start_checkout(client)

    response = client.post(f"{checkout_path}/pay")

    assert response.status_code == 400
    assert db.session.scalars(select(Order.status)).one() == "pending"


def test_unknown_test_checkout_is_404(db, client):
    assert client.get("/dev/checkout/cs_test_nothing").status_code == 404


def test_there_is_no_test_checkout_when_stripe_keys_are_set(make_app):
    client = make_app(STRIPE_SECRET_KEY="sk_test_123").test_client()

    assert client.get("/dev/checkout/cs_test_anything").status_code == 404
    assert client.get("/dev/portal").status_code == 404


def subscribe(client, db, tier="basic") -> Subscription:
    checkout_path = start_checkout(client, f"/checkout/plan/{tier}")
    paid = press(client, checkout_path, "pay")
    assert paid.status_code == 303
    success = client.get(path_of(paid.headers["Location"]))
    assert "Subscription active" in success.get_data(as_text=True)
    db.session.expire_all()
    return db.session.scalars(select(Subscription)).one()


def test_subscribing_creates_the_subscription_and_grants_the_first_month(db, client, customer):
    subscription = subscribe(client, db)

    assert (subscription.tier, subscription.status) == ("basic", "active")
    assert subscription.user_id == customer.id
    assert fresh(db, User, customer.id).balance == 200
    assert sorted(event_types(db)) == sorted(
        ["customer.subscription.created", "invoice.paid", "checkout.session.completed"]
    )


def open_portal(client) -> str:
    """Ask for another plan while subscribed: the site sends us to the billing portal."""
    response = client.post("/checkout/plan/premium", data={"csrf_token": csrf(client)})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("http://localhost/dev/portal?customer=cus_")
    return path_of(response.headers["Location"])


def portal_action(client, portal_path, subscription, action):
    session = portal_path.split("session=")[1]
    return client.post(
        f"/dev/portal/subscriptions/{subscription.stripe_subscription_id}/{action}?session={session}",
        data={"csrf_token": csrf(client, portal_path)},
    )


def test_subscribed_customer_is_sent_to_the_portal_and_can_cancel_and_resume(db, client, customer):
    subscription = subscribe(client, db)
    portal_path = open_portal(client)

    portal = client.get(portal_path).get_data(as_text=True)
    assert "TEST BILLING PORTAL" in portal
    assert "Cancel at period end" in portal
    assert "Return to site" in portal

    canceled = portal_action(client, portal_path, subscription, "cancel")
    assert canceled.status_code == 303
    assert fresh(db, Subscription, subscription.id).cancel_at_period_end is True

    portal_action(client, portal_path, subscription, "resume")
    assert fresh(db, Subscription, subscription.id).cancel_at_period_end is False


def test_advancing_a_period_grants_the_next_month_in_place_of_the_last(db, client, customer):
    subscription = subscribe(client, db)
    first_end = subscription.current_period_end
    portal_path = open_portal(client)

    response = portal_action(client, portal_path, subscription, "renew")

    assert response.status_code == 303
    renewed = fresh(db, Subscription, subscription.id)
    assert renewed.current_period_start == first_end
    assert renewed.status == "active"
    assert fresh(db, User, customer.id).balance == 200  # replaced, not added to
    lots = db.session.scalars(select(CreditLot).where(CreditLot.source == "monthly")).all()
    assert len(lots) == 2


def test_a_failed_renewal_makes_the_subscription_past_due(db, client, customer):
    subscription = subscribe(client, db)
    portal_path = open_portal(client)

    portal_action(client, portal_path, subscription, "fail-renewal")

    assert fresh(db, Subscription, subscription.id).status == "past_due"
    assert "Pay the unpaid invoice" in client.get(portal_path).get_data(as_text=True)

    portal_action(client, portal_path, subscription, "retry")

    assert fresh(db, Subscription, subscription.id).status == "active"


def test_portal_of_another_customer_is_404(db, client, customer):
    subscribe(client, db)
    portal_path = open_portal(client)

    forged = portal_path.replace("customer=cus_", "customer=cus_other")

    assert client.get(forged).status_code == 404
    assert client.get("/dev/portal?session=bps_forged").status_code == 404
