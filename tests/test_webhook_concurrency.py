"""Row 11 of the matrix: 100 parallel identical deliveries on PostgreSQL grant once.

The webhook stores; the parallel deliveries race on the insert (one is queued,
the others find it stored), then the worker's step applies it once. Events
about one object under different ids race in two real worker processes.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select, update

from billing_site.models import CreditLot, LedgerEntry, Order, StripeEvent, User
from tests import worker_process
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, drain_inbox, make_event, signature_for

DELIVERIES = 100


@pytest.mark.concurrency
def test_hundred_parallel_identical_deliveries_grant_exactly_once(app, db, live_server):
    user = make_user()
    order = make_order(user, "pro")
    event = make_event("checkout.session.completed", checkout_session(order))
    payload = json.dumps(event)
    headers = {"Stripe-Signature": signature_for(payload), "Content-Type": "application/json"}
    start = threading.Barrier(DELIVERIES)

    def deliver(_):
        start.wait(timeout=30)  # release every request at once
        return requests.post(
            f"{live_server}/stripe/webhook", data=payload, headers=headers, timeout=60
        )

    with ThreadPoolExecutor(max_workers=DELIVERIES) as pool:
        responses = list(pool.map(deliver, range(DELIVERIES)))

    statuses = [response.status_code for response in responses]
    assert statuses == [200] * DELIVERIES
    queued = sorted(response.json()["queued"] for response in responses)
    assert queued == [False] * (DELIVERIES - 1) + [True]
    assert [r.outcome for r in drain_inbox(app)] == ["fulfilled"]
    assert db.session.get(User, user.id).balance == 100
    assert db.session.get(Order, order.id).status == "paid"
    assert db.session.scalar(select(func.count()).select_from(CreditLot)) == 1
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == 1
    assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 1
    assert db.session.get(StripeEvent, event["id"]).attempts == 1


@pytest.mark.concurrency
def test_parallel_events_about_one_session_under_different_ids_grant_once(
    db, live_server, database_url, redis_server, tmp_path
):
    """Two events about one object (Stripe does send them) race on the object, not the id."""
    user = make_user()
    order = make_order(user, "pro")
    session = checkout_session(order)
    events = [
        make_event(kind, session)
        for kind in ["checkout.session.completed", "checkout.session.async_payment_succeeded"] * 10
    ]
    start = threading.Barrier(len(events))

    def deliver(event):
        payload = json.dumps(event)
        headers = {"Stripe-Signature": signature_for(payload), "Content-Type": "application/json"}
        start.wait(timeout=30)
        return requests.post(
            f"{live_server}/stripe/webhook", data=payload, headers=headers, timeout=60
        )

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        statuses = [response.status_code for response in pool.map(deliver, events)]

    assert statuses == [200] * len(events)
    processed = (
        select(func.count()).select_from(StripeEvent).where(StripeEvent.status == "processed")
    )

    def all_processed():
        db.session.expire_all()
        return db.session.scalar(processed) == len(events)

    with worker_process.running(database_url, redis_server.url, tmp_path, count=2):
        worker_process.wait_until(all_processed, timeout=90, message="not all applied")
    db.session.expire_all()
    assert db.session.get(User, user.id).balance == 100
    assert db.session.scalar(select(func.count()).select_from(CreditLot)) == 1


@pytest.mark.concurrency
def test_a_redelivery_of_an_event_a_worker_is_applying_is_answered_without_waiting(
    app, db, live_server
):
    # A worker mid-batch has marked the event done but not committed yet (it may be
    # descheduled there: it runs at a lower priority than the web).
    order = make_order(make_user(), "pro")
    event = make_event("checkout.session.completed", checkout_session(order))
    payload = json.dumps(event)
    headers = {"Stripe-Signature": signature_for(payload), "Content-Type": "application/json"}
    first = requests.post(f"{live_server}/stripe/webhook", data=payload, headers=headers)
    assert first.json()["queued"] is True
    worker = db.engine.connect()
    try:
        worker.execute(
            update(StripeEvent).where(StripeEvent.id == event["id"]).values(status="processed")
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            redelivery = pool.submit(
                requests.post, f"{live_server}/stripe/webhook", data=payload, headers=headers
            )
            try:
                answer = redelivery.result(timeout=10)
            finally:
                worker.rollback()  # lets a waiting INSERT finish, so the pool can close
    finally:
        worker.close()

    assert answer.status_code == 200
    assert answer.json() == {"received": True, "event_id": event["id"], "queued": False}
