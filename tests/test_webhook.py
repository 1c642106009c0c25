"""The webhook's front door: signatures, recording once, failures and retries.

Rows 1-10 and 16 of TESTING.md's reliability matrix, plus the secret list, the
API path, unknown types and the admin's replay.
"""

import hashlib
import hmac
import json
import logging
import time

import pytest
from sqlalchemy import Text, func, select

from billing_site import credits
from billing_site.models import CreditLot, LedgerEntry, Order, StripeEvent, User
from billing_site.webhook import services
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.factories import make_order, make_user
from tests.stripe_events import (
    checkout_session,
    drain_inbox,
    make_event,
    post_event,
    stripe_object,
)


def count(db, model, *criteria) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def paid_order_event(db, **changes):
    user = make_user()
    order = make_order(user, "pro")
    return user, order, make_event("checkout.session.completed", checkout_session(order, **changes))


def post_raw(client, payload: bytes, signature: str | None, path="/stripe/webhook"):
    headers = {"Stripe-Signature": signature} if signature is not None else {}
    return client.post(path, data=payload, headers=headers, content_type="application/json")


def hmac_hex(secret: str, timestamp: int, payload: bytes) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def assert_nothing_written(db):
    assert count(db, StripeEvent) == 0
    assert count(db, CreditLot) == 0
    assert count(db, LedgerEntry) == 0


# --- 1: the happy path -------------------------------------------------------------


def test_paid_checkout_grants_the_pack_once_and_records_the_event(db, client):
    user, order, event = paid_order_event(db)

    response = post_event(client, event)

    assert response.status_code == 200
    assert response.response.get_json() == {
        "received": True,
        "event_id": event["id"],
        "queued": True,
    }
    assert response.outcome == "fulfilled"  # what the worker then did
    assert fresh(db, User, user.id).balance == 100
    assert fresh(db, Order, order.id).status == "paid"
    assert count(db, CreditLot, CreditLot.user_id == user.id) == 1
    assert count(db, LedgerEntry, LedgerEntry.stripe_event_id == event["id"]) == 1
    stored = fresh(db, StripeEvent, event["id"])
    assert count(db, StripeEvent) == 1
    assert (stored.status, stored.attempts, stored.type) == (
        "processed",
        1,
        "checkout.session.completed",
    )
    assert stored.object_id == order.checkout_session_id
    assert stored.processed_at is not None


def test_the_stored_payload_is_the_body_stripe_signed_byte_for_byte(db, client):
    _, _, event = paid_order_event(db)
    # Stripe sends its events pretty-printed; the inbox keeps that text, not a re-encoding.
    body = json.dumps(event, indent=2).encode()
    timestamp = int(time.time())
    signature = f"t={timestamp},v1={hmac_hex(TEST_WEBHOOK_SECRET, timestamp, body)}"

    assert post_raw(client, body, signature).status_code == 200

    stored_text = db.session.scalar(
        select(StripeEvent.payload.cast(Text)).where(StripeEvent.id == event["id"])
    )
    assert stored_text.encode() == body
    assert fresh(db, StripeEvent, event["id"]).payload == event  # and the worker reads it as JSON


def test_webhook_writes_one_structured_log_line_per_event(db, client, caplog):
    _, order, event = paid_order_event(db)
    with caplog.at_level(logging.INFO, logger="billing_site.webhook"):
        post_event(client, event)

    lines = [r.getMessage() for r in caplog.records if r.name == "billing_site.webhook"]
    assert lines == [
        f"webhook event_id={event['id']} type=checkout.session.completed "
        f"object_id={order.checkout_session_id} status=queued",
        f"webhook event_id={event['id']} type=checkout.session.completed "
        f"object_id={order.checkout_session_id} outcome=fulfilled status=processed",
    ]


def test_api_path_is_the_same_webhook(db, client):
    user, _, event = paid_order_event(db)
    response = post_event(client, event, path="/api/v1/stripe/webhook")
    assert response.status_code == 200
    assert fresh(db, User, user.id).balance == 100


# --- 2-7, 9: deliveries that are refused --------------------------------------------


def test_missing_signature_is_refused_and_nothing_is_written(db, client):
    _, _, event = paid_order_event(db)
    response = post_raw(client, json.dumps(event).encode(), None)

    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_webhook"
    assert "Stripe-Signature" in body["message"]
    assert_nothing_written(db)


def test_tampered_body_is_refused(db, client):
    _, _, event = paid_order_event(db)
    payload = json.dumps(event).encode()
    timestamp = int(time.time())
    signature = f"t={timestamp},v1={hmac_hex(TEST_WEBHOOK_SECRET, timestamp, payload)}"
    tampered = payload.replace(b'"paid"', b'"pai d"', 1)

    assert post_raw(client, tampered, signature).status_code == 400
    assert_nothing_written(db)
    # The untampered body with the same signature is accepted: only the byte mattered.
    assert post_raw(client, payload, signature).status_code == 200


def test_signature_made_with_another_secret_is_refused(db, client):
    _, _, event = paid_order_event(db)
    response = post_event(client, event, secret="whsec_someone_else")
    assert response.status_code == 400
    assert_nothing_written(db)


def test_only_a_v0_signature_is_refused(db, client):
    _, _, event = paid_order_event(db)
    payload = json.dumps(event).encode()
    timestamp = int(time.time())
    signature = f"t={timestamp},v0={hmac_hex(TEST_WEBHOOK_SECRET, timestamp, payload)}"

    assert post_raw(client, payload, signature).status_code == 400
    assert_nothing_written(db)


def test_secret_roll_with_one_bad_and_one_good_v1_is_accepted(db, client):
    user, _, event = paid_order_event(db)
    payload = json.dumps(event).encode()
    timestamp = int(time.time())
    good = hmac_hex(TEST_WEBHOOK_SECRET, timestamp, payload)
    signature = f"t={timestamp},v1={'0' * 64},v1={good}"

    assert post_raw(client, payload, signature).status_code == 200
    drain_inbox(client.application)
    assert fresh(db, User, user.id).balance == 100


def test_second_secret_in_the_setting_is_accepted(make_app):
    app = make_app(STRIPE_WEBHOOK_SECRET=f"whsec_old_one, {TEST_WEBHOOK_SECRET}")
    with app.app_context():
        from billing_site.extensions import db

        user, _, event = paid_order_event(db)
        response = post_event(app.test_client(), event)
        assert response.status_code == 200
        assert fresh(db, User, user.id).balance == 100
        db.session.remove()


def test_signature_301_seconds_old_is_refused(db, client):
    _, _, event = paid_order_event(db)
    response = post_event(client, event, timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert_nothing_written(db)


def test_signature_299_seconds_old_is_accepted(db, client):
    user, _, event = paid_order_event(db)
    response = post_event(client, event, timestamp=int(time.time()) - 299)
    assert response.status_code == 200
    assert fresh(db, User, user.id).balance == 100


def test_signature_an_hour_in_the_future_is_refused(db, client):
    _, _, event = paid_order_event(db)
    response = post_event(client, event, timestamp=int(time.time()) + 3600)
    assert response.status_code == 400
    assert "future" in response.get_json()["message"]
    assert_nothing_written(db)


def test_signed_body_that_is_not_json_is_refused(db, client):
    payload = b"this is not json {"
    timestamp = int(time.time())
    signature = f"t={timestamp},v1={hmac_hex(TEST_WEBHOOK_SECRET, timestamp, payload)}"

    response = post_raw(client, payload, signature)

    assert response.status_code == 400
    assert "JSON" in response.get_json()["message"]
    assert_nothing_written(db)


# --- 8: the same delivery again -------------------------------------------------------


def test_replayed_delivery_answers_200_and_grants_once(db, client):
    user, _, event = paid_order_event(db)

    first = post_event(client, event)
    second = post_event(client, event)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json()["outcome"] == "duplicate"
    assert fresh(db, User, user.id).balance == 100
    assert count(db, CreditLot, CreditLot.user_id == user.id) == 1
    assert count(db, StripeEvent) == 1
    assert fresh(db, StripeEvent, event["id"]).attempts == 1


# --- 10: CSRF covers forms, not the webhook -------------------------------------------


def test_webhook_needs_no_csrf_token_while_forms_do(app, db, client):
    assert app.config.get("WTF_CSRF_ENABLED", True) is True
    user, _, event = paid_order_event(db)

    assert post_event(client, event).status_code == 200
    assert fresh(db, User, user.id).balance == 100
    form_without_token = client.post("/auth/login", data={"email": "a@b.c", "password": "x"})
    assert form_without_token.status_code == 400


# --- unknown types ----------------------------------------------------------------


def test_unknown_event_type_is_recorded_as_ignored(db, client):
    event = make_event("plan.created", stripe_object("event")["data"]["object"])

    response = post_event(client, event)

    assert response.status_code == 200
    stored = fresh(db, StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("ignored", 1)
    assert post_event(client, event).get_json()["outcome"] == "duplicate"


# --- 16: a failure after the ledger insert ----------------------------------------


@pytest.fixture
def grant_that_fails_after_writing(monkeypatch):
    real_grant = credits.grant

    def grant_then_fail(*args, **kwargs):
        real_grant(*args, **kwargs)  # the lot and entry are flushed …
        raise RuntimeError("database went away after the ledger insert")  # … then this

    monkeypatch.setattr(credits, "grant", grant_then_fail)
    return monkeypatch


def test_failure_after_the_ledger_insert_commits_nothing_and_the_retry_grants_once(
    db, client, grant_that_fails_after_writing
):
    user, order, event = paid_order_event(db)

    failed = post_event(client, event)

    assert failed.status_code == 200  # stored: from here on the retry is ours, not Stripe's
    assert not failed.applied_ok
    assert count(db, CreditLot) == 0
    assert count(db, LedgerEntry) == 0
    assert fresh(db, Order, order.id).status == "pending"
    assert fresh(db, User, user.id).balance == 0
    stored = fresh(db, StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("retrying", 1)
    assert "database went away after the ledger insert" in stored.error
    # Tried again 30 s after the failure (which came a moment after it was received).
    assert 30 <= (stored.next_attempt_at - stored.received_at).total_seconds() <= 40

    grant_that_fails_after_writing.undo()  # the fault is gone
    assert drain_inbox(client.application) == []  # not due yet
    retried = drain_inbox(client.application, now=stored.next_attempt_at)

    assert [(r.event_id, r.outcome) for r in retried] == [(event["id"], "fulfilled")]
    assert fresh(db, User, user.id).balance == 100
    assert count(db, CreditLot) == 1
    assert fresh(db, Order, order.id).status == "paid"
    stored = fresh(db, StripeEvent, event["id"])
    assert (stored.status, stored.attempts, stored.error) == ("processed", 2, None)
    assert stored.next_attempt_at is None


# --- the admin's replay -----------------------------------------------------------------


def test_replay_reruns_a_stored_event_without_granting_twice(db, client):
    user, _, event = paid_order_event(db)
    post_event(client, event)

    outcome = services.replay_event(event["id"])

    assert outcome == "noop: order already paid (no change)"
    assert fresh(db, User, user.id).balance == 100
    assert fresh(db, StripeEvent, event["id"]).attempts == 2


def test_replay_of_a_failed_event_applies_it(db, client, grant_that_fails_after_writing):
    user, _, event = paid_order_event(db)
    assert not post_event(client, event).applied_ok
    grant_that_fails_after_writing.undo()

    assert services.replay_event(event["id"]) == "fulfilled"
    assert fresh(db, User, user.id).balance == 100
    assert fresh(db, StripeEvent, event["id"]).status == "processed"


def test_replay_of_an_unknown_event_says_so(db):
    with pytest.raises(services.EventNotFound):
        services.replay_event("evt_never_seen")


def test_webhook_is_exempt_from_rate_limits_that_hold_elsewhere(make_app):
    app = make_app(RATELIMIT_DEFAULT="2 per minute")
    client = app.test_client()
    with app.app_context():
        from billing_site.extensions import db

        user = make_user()
        events = [
            make_event("checkout.session.completed", checkout_session(make_order(user, "starter")))
            for _ in range(5)
        ]
        statuses = [post_event(client, event).status_code for event in events]
        pages = [client.get("/api/v1/stripe/packages").status_code for _ in range(3)]

        assert statuses == [200] * 5
        assert pages == [200, 200, 429]
        assert fresh(db, User, user.id).balance == 100
        db.session.remove()


# --- the webhook's own lane (billing_site/webhook/lane.py) -------------------------------


def test_the_webhook_answers_without_a_session_cookie_and_with_a_request_id(db, client):
    from billing_site.metrics import HTTP_REQUESTS

    counted = HTTP_REQUESTS.labels("POST", "webhook.receive_event", "200")
    before = counted._value.get()
    _user, _order, event = paid_order_event(db)

    stored = post_event(client, event, apply=False)
    refused = post_raw(client, b"{}", "t=1,v1=nope")

    assert stored.status_code == 200 and refused.status_code == 400
    for answer in (stored, refused):
        assert "Set-Cookie" not in answer.headers
        assert len(answer.headers["X-Request-ID"]) == 32
    assert counted._value.get() == before + 1
    # Other methods still go through the site: a GET is 405, in the site's JSON shape.
    not_allowed = client.get("/stripe/webhook")
    assert not_allowed.status_code == 405
    assert not_allowed.get_json()["error"] == "method_not_allowed"
