"""Emails (issue 14, TESTING.md row 50): each one exactly once per cause, also when its
event is delivered five times; none for a rolled-back transaction; readable at /dev/mail.

Without MAIL_URL (these tests) nothing leaves the machine: messages are stored
in outbound_emails, which is what a developer sees at /dev/mail.
"""

import re
import time
from datetime import timedelta

from sqlalchemy import select

from billing_site import credits
from billing_site.extensions import db as _db
from billing_site.models import CreditLot, EmailPreference, Order, OutboundEmail, utcnow
from billing_site.notifications import messages
from billing_site.notifications.scans import notify_expiring_credits
from tests.factories import log_in, make_order, make_paid_order, make_subscription, make_user
from tests.stripe_events import (
    checkout_session,
    drain_inbox,
    make_event,
    post_event,
    stripe_object,
)

DAY = 86400


def outbox(kind: str | None = None) -> list[OutboundEmail]:
    _db.session.expire_all()
    statement = select(OutboundEmail).order_by(OutboundEmail.id)
    if kind:
        statement = statement.where(OutboundEmail.kind == kind)
    return list(_db.session.execute(statement).scalars())


def deliver_times(client, event: dict, times: int = 5) -> list[str]:
    outcomes = []
    for _ in range(times):
        response = post_event(client, event)
        assert response.status_code == 200, response.get_data(as_text=True)
        outcomes.append(response.get_json()["outcome"])
    return outcomes


def renewal_invoice(subscription, invoice_id: str, *, status="paid", **changes) -> dict:
    now = int(time.time())
    fields = {
        "id": invoice_id,
        "status": status,
        "customer": subscription.stripe_customer_id,
        "billing_reason": "subscription_cycle",
        "amount_due": 999,
        "amount_paid": 999 if status == "paid" else 0,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/{invoice_id}/pdf",
        "created": now,
    }
    invoice = stripe_object("invoice", **{**fields, **changes})
    invoice["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {
            "metadata": {"user_id": str(subscription.user_id), "tier": subscription.tier},
            "subscription": subscription.stripe_subscription_id,
        },
    }
    line = invoice["lines"]["data"][0]
    line["period"] = {"start": now, "end": now + 30 * DAY}
    line["parent"] = {
        "type": "subscription_item_details",
        "subscription_item_details": {"subscription": subscription.stripe_subscription_id},
    }
    return invoice


# --- receipts ---------------------------------------------------------------------------


def test_a_pack_receipt_is_queued_once_however_often_its_events_arrive(db, client):
    user = make_user("buyer@example.com")
    order = make_order(user, "pro")
    session = checkout_session(order)
    completed = make_event("checkout.session.completed", session)

    outcomes = deliver_times(client, completed, 5)
    deliver_times(client, make_event("checkout.session.async_payment_succeeded", session), 2)

    assert outcomes[0] == "fulfilled" and set(outcomes[1:]) == {"duplicate"}
    [receipt] = outbox("receipt")
    assert receipt.cause_key == f"receipt:order:{order.id}"
    assert receipt.to_address == "buyer@example.com"
    assert receipt.status == "stored"  # no MAIL_URL: kept for /dev/mail, never sent
    assert "$20.00" in receipt.subject and "Pro Pack" in receipt.subject
    assert f"http://localhost/account/orders/{order.id}/receipt" in receipt.text_body
    assert "Amount paid: $20.00" in receipt.text_body
    assert f'href="http://localhost/account/orders/{order.id}/receipt"' in receipt.html_body


def test_renewal_failure_recovery_and_receipts_each_come_once(db, client):
    user = make_user("subscriber@example.com")
    subscription = make_subscription(user, tier="basic", status="active")
    failed = renewal_invoice(
        subscription, "in_renew_1", status="open", next_payment_attempt=int(time.time()) + 3 * DAY
    )

    # Stripe retries a declined renewal and reports each failure: one email.
    for _ in range(3):
        deliver_times(client, make_event("invoice.payment_failed", failed), 2)

    [failure] = outbox("payment_failed")
    assert failure.cause_key == "payment_failed:invoice:in_renew_1"
    assert "http://localhost/account/subscription" in failure.text_body  # the billing portal
    assert "your plan ends on" in failure.text_body
    access_ends = f"{(utcnow() + timedelta(days=14)):%-d %B %Y}"
    assert access_ends in failure.text_body
    assert outbox("receipt") == []

    paid = renewal_invoice(subscription, "in_renew_1", status="paid")
    deliver_times(client, make_event("invoice.paid", paid), 5)

    [receipt] = outbox("receipt")
    assert receipt.cause_key == "receipt:invoice:in_renew_1"
    assert "Basic plan, renewal" in receipt.subject and "$9.99" in receipt.subject
    assert "https://invoice.stripe.com/i/in_renew_1" in receipt.text_body
    [recovered] = outbox("payment_recovered")
    assert recovered.to_address == "subscriber@example.com"
    assert len(outbox()) == 3

    # The next month's renewal, paid first time: a receipt and nothing else.
    deliver_times(client, make_event("invoice.paid", renewal_invoice(subscription, "in_2")), 5)
    assert [e.cause_key for e in outbox("receipt")] == [
        "receipt:invoice:in_renew_1",
        "receipt:invoice:in_2",
    ]
    assert len(outbox("payment_recovered")) == 1


def test_first_subscription_payment_and_proration_get_receipts_a_trial_invoice_does_not(db, client):
    user = make_user()
    subscription = make_subscription(user, tier="basic", status="active")
    first = renewal_invoice(subscription, "in_first", billing_reason="subscription_create")
    prorated = renewal_invoice(
        subscription, "in_prorate", billing_reason="subscription_update", amount_paid=1500
    )
    trial = renewal_invoice(subscription, "in_trial", billing_reason="subscription_create")
    trial["amount_paid"] = 0

    for invoice in (first, prorated, trial):
        deliver_times(client, make_event("invoice.paid", invoice), 2)

    subjects = [email.subject for email in outbox("receipt")]
    assert subjects == [
        "Receipt: the Basic plan, first month, $9.99",
        "Receipt: the Basic plan, plan change (prorated), $15.00",
    ]


def test_a_failed_first_invoice_sends_no_renewal_failure(db, client):
    user = make_user()
    subscription = make_subscription(user, tier="basic", status="incomplete")
    invoice = renewal_invoice(subscription, "in_first_fail", status="open")
    deliver_times(client, make_event("invoice.payment_failed", invoice), 2)
    assert outbox() == []


def test_trial_ending_is_told_once(db, client):
    user = make_user("trial@example.com")
    trial_end = int(time.time()) + 3 * DAY
    subscription = make_subscription(user, tier="basic", status="trialing")
    sub = stripe_object(
        "subscription",
        id=subscription.stripe_subscription_id,
        status="trialing",
        customer=subscription.stripe_customer_id,
        metadata={"user_id": str(user.id), "tier": "basic"},
        trial_end=trial_end,
        cancel_at_period_end=False,
    )
    deliver_times(client, make_event("customer.subscription.trial_will_end", sub), 5)

    [email] = outbox("trial_ending")
    assert "ends in 3 days" in email.subject
    assert "$9.99 a month" in email.text_body


# --- refunds and disputes ---------------------------------------------------------------


def test_a_refund_is_told_once_with_the_credits_taken_back(db, client):
    user = make_user("refunded@example.com")
    order = make_paid_order(user, "pro")  # $20.00, 100 credits
    charge = stripe_object(
        "charge",
        id=order.charge_id,
        payment_intent=order.payment_intent_id,
        amount=2000,
        amount_captured=2000,
        amount_refunded=1000,
        refunded=False,
    )
    deliver_times(client, make_event("charge.refunded", charge), 5)

    [email] = outbox("refund_issued")
    assert email.to_address == "refunded@example.com"
    assert "We refunded $10.00" in email.subject
    assert "50 credits that came with the refunded share were taken back" in email.text_body


def test_a_dispute_is_told_to_every_admin_once(db, client):
    admins = [
        make_user("boss@example.com", is_admin=True),
        make_user("ops@example.com", is_admin=True),
    ]
    order = make_paid_order(make_user("customer@example.com"), "pro")
    dispute = stripe_object(
        "dispute",
        id="dp_notify_1",
        amount=2000,
        charge=order.charge_id,
        payment_intent=order.payment_intent_id,
        status="needs_response",
        reason="fraudulent",
    )
    deliver_times(client, make_event("charge.dispute.created", dispute), 5)
    deliver_times(client, make_event("charge.dispute.updated", dispute), 2)

    emails = outbox("dispute_opened")
    assert sorted(e.to_address for e in emails) == sorted(a.email for a in admins)
    assert all("customer@example.com" in e.subject for e in emails)
    assert all("100 credits were taken back" in e.text_body for e in emails)


# --- credits running out ----------------------------------------------------------------


def grant_pack_lot(user, amount: int, expires_in: timedelta, ref: str = "test") -> CreditLot:
    lot = credits.grant(
        user.id, amount, source="pack", source_ref=ref, expires_at=utcnow() + expires_in
    )
    _db.session.commit()
    return lot


def test_expiring_credits_are_told_once_per_lot_and_the_customer_can_turn_it_off(db):
    soon = make_user("soon@example.com")
    later = make_user("later@example.com")
    quiet = make_user("quiet@example.com")
    soon_lot = grant_pack_lot(soon, 20, timedelta(days=5), "soon")
    grant_pack_lot(later, 20, timedelta(days=20), "later")
    grant_pack_lot(quiet, 20, timedelta(days=2), "quiet")
    _db.session.add(EmailPreference(user_id=quiet.id, credits_expiring=False, low_balance=True))
    _db.session.commit()

    assert notify_expiring_credits() == 1
    assert notify_expiring_credits() == 0  # the next day's run: same lot, no second email

    [email] = outbox("credits_expiring")
    assert email.cause_key == f"expiring:lot:{soon_lot.id}"
    assert email.to_address == "soon@example.com"
    assert "20 credits expire on" in email.subject
    assert "#email-preferences" in email.text_body  # how to turn it off


def test_low_balance_is_told_once_per_top_up(app, db, client):
    user = make_user("low@example.com")
    make_subscription(user, tier="basic")  # no free allowance: the pack is the last top-up
    grant_pack_lot(user, 20, timedelta(days=300), "first")  # "low" is under 2
    log_in(client, user)

    def generate(times: int):
        for _ in range(times):
            response = client.post(
                "/api/v1/generations",
                json={"prompt": "a lighthouse", "model": "standard"},
                headers={"X-CSRFToken": token},
            )
            assert response.status_code == 201, response.get_data(as_text=True)

    token = csrf(client)
    generate(18)
    assert outbox("low_balance") == []  # 2 left: not under a tenth of 20 yet
    generate(2)  # 1, then 0 left: the same top-up, so one email
    [email] = outbox("low_balance")
    assert email.subject == "You have 1 credit left"
    assert "http://localhost/pricing" in email.text_body

    top_up = grant_pack_lot(user, 30, timedelta(days=300), "second")  # "low" is under 3
    generate(28)
    emails = outbox("low_balance")
    assert [e.cause_key for e in emails] == [email.cause_key, f"low_balance:lot:{top_up.id}"]

    _db.session.add(EmailPreference(user_id=user.id, credits_expiring=True, low_balance=False))
    _db.session.commit()
    grant_pack_lot(user, 10, timedelta(days=300), "third")
    generate(11)
    assert len(outbox("low_balance")) == 2  # turned off


def test_the_account_page_turns_the_optional_emails_off(app, db, client):
    user = make_user()
    log_in(client, user)
    page = client.get("/account").get_data(as_text=True)
    assert 'id="email-preferences"' in page and "checked" in page

    response = client.post(
        "/account/email-preferences", data={"csrf_token": csrf(client), "low_balance": "on"}
    )

    assert response.status_code == 303
    preference = _db.session.get(EmailPreference, user.id)
    assert (preference.credits_expiring, preference.low_balance) == (False, True)
    assert messages.wants(user.id, "credits_expiring") is False
    assert messages.wants(user.id, "receipt") is True  # receipts always go


# --- transactions -----------------------------------------------------------------------


def test_a_rolled_back_cause_leaves_no_email(app, db):
    order = make_paid_order(make_user(), "pro")
    assert messages.pack_receipt(order) is not None
    _db.session.rollback()

    assert outbox() == []
    assert _db.session.info.get("outbound_email_ids") is None  # nothing left to send
    # The same cause, applied for real later, still gets its one message.
    messages.pack_receipt(_db.session.get(Order, order.id))
    _db.session.commit()
    assert len(outbox("receipt")) == 1


def test_a_failing_handler_rolls_its_email_back_with_it(app, db, client, monkeypatch):
    from billing_site import fulfilment

    order = make_order(make_user(), "pro")
    event = make_event("checkout.session.completed", checkout_session(order))

    def grant_then_fail(*args, **kwargs):
        messages.pack_receipt(_db.session.get(Order, order.id))
        raise RuntimeError("the database went away mid-grant")

    monkeypatch.setattr(fulfilment, "grant_pack_credits", grant_then_fail)
    assert post_event(client, event).applied_ok is False  # stored, then the worker failed
    assert outbox() == []

    monkeypatch.undo()
    drain_inbox(client.application, now=utcnow() + timedelta(hours=1))  # the retry succeeds
    deliver_times(client, event, 2)
    assert len(outbox("receipt")) == 1


def test_an_email_the_database_refuses_never_undoes_the_payment(app, db, client, monkeypatch):
    from sqlalchemy import text

    from billing_site.notifications import outbox as outbox_module

    user = make_user()
    orders = [make_order(user, "pro"), make_order(user, "starter")]
    events = [make_event("checkout.session.completed", checkout_session(o)) for o in orders]
    # A statement PostgreSQL rejects, as a real INSERT would on a full disk or a bad
    # value: it aborts the transaction unless the savepoint around it is rolled back.
    monkeypatch.setattr(
        outbox_module, "_queue_statement", lambda: text("INSERT INTO no_such_table VALUES (1)")
    )

    for event in events:
        post_event(client, event, apply=False)
    applied = drain_inbox(client.application)  # both in one batch of the worker

    assert [(result.ok, result.outcome) for result in applied] == [(True, "fulfilled")] * 2
    _db.session.expire_all()
    assert [_db.session.get(Order, o.id).status for o in orders] == ["paid", "paid"]
    assert credits.current_balance(user.id) == sum(o.credits for o in orders)
    assert outbox() == []


# --- /dev/mail --------------------------------------------------------------------------


def test_dev_mail_lists_each_message_and_shows_its_html_and_text(db, client):
    order = make_order(make_user("dev@example.com"), "starter")
    deliver_times(client, make_event("checkout.session.completed", checkout_session(order)), 1)
    [email] = outbox()

    listing = client.get("/dev/mail")
    page = client.get(f"/dev/mail/{email.id}")
    html = client.get(f"/dev/mail/{email.id}.html")
    text = client.get(f"/dev/mail/{email.id}.txt")

    assert listing.status_code == 200 and email.subject in listing.get_data(as_text=True)
    assert page.status_code == 200 and "dev@example.com" in page.get_data(as_text=True)
    assert html.mimetype == "text/html" and "Thank you, your payment went through" in html.text
    assert "style-src 'unsafe-inline'" in html.headers["Content-Security-Policy"]
    assert "script-src" not in html.headers["Content-Security-Policy"]  # default-src 'none'
    assert text.mimetype == "text/plain" and "Amount paid: $5.00" in text.text
    assert client.get("/dev/mail/999999").status_code == 404


def test_dev_mail_does_not_exist_with_real_stripe(make_app):
    app = make_app(STRIPE_SECRET_KEY="sk_test_not_used")
    assert app.test_client().get("/dev/mail").status_code == 404


def csrf(client) -> str:
    from tests.conftest import csrf_token_from

    return csrf_token_from(client.get("/auth/login").get_data(as_text=True))


# --- accounts ---------------------------------------------------------------------------


def test_sign_up_sends_the_verification_link_through_the_outbox(db, client, auth):
    response = auth.signup("new@example.com")
    assert response.status_code in (200, 303)

    [email] = outbox("verify_email")
    assert email.to_address == "new@example.com"
    link = re.search(r"http://localhost(/auth/verify/\S+)", email.text_body).group(1)
    assert f'href="http://localhost{link}"' in email.html_body
    assert client.get(link).status_code in (302, 303)  # the link verifies and logs in

    auth.logout()
    auth.signup("new@example.com")  # someone tries the address again
    auth.signup("new@example.com")
    assert len(outbox("signup_attempt")) == 1  # at most one notice an hour
