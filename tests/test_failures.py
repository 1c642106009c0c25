"""The site when its parts fail (issue 6, item 2), on the test PostgreSQL and Redis.

Each test breaks one real part at a bad moment and asserts what Stripe, a customer
or the database would then observe:

- the database connection drops in the middle of a webhook's transaction;
- Stripe answers 500 and then succeeds while a Checkout Session is created
  (the refund variant is tests/test_refunds.py's row 27, on the admin's confirm path);
- Stripe times out on every attempt during checkout;
- Redis stops while anonymous visitors are generating;
- the worker process is killed with SIGKILL while it holds an acknowledged event's
  transaction (the web process only stores events now, so it has none to lose).
"""

import json
import socket
import time

import psycopg
import pytest
import requests
import responses
from sqlalchemy import func, select, text

from billing_site import credits
from billing_site.extensions import db as _db
from billing_site.extensions import limiter
from billing_site.models import CreditLot, LedgerEntry, Order, StripeEvent, User
from tests import gunicorn_server, servers, worker_process
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_order, make_user
from tests.stripe_events import (
    checkout_session,
    drain_inbox,
    make_event,
    post_event,
    signature_for,
    stripe_object,
)

STRIPE_API = "https://api.stripe.com/v1"
CHECKOUT_URL = "https://checkout.stripe.com/c/pay/cs_test_after_a_500"


def count(db, model, *criteria) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def fresh(db, model, key):
    db.session.expire_all()
    return db.session.get(model, key)


def assert_no_grant(db, user_id: int, order_id: int) -> None:
    """What the customer and the admin would see if the delivery never happened."""
    assert count(db, CreditLot, CreditLot.user_id == user_id) == 0
    assert count(db, LedgerEntry, LedgerEntry.user_id == user_id) == 0
    assert fresh(db, User, user_id).balance == 0
    assert fresh(db, Order, order_id).status == "pending"


def assert_granted_once(db, user_id: int, order_id: int, credits_: int = 100) -> None:
    assert count(db, CreditLot, CreditLot.user_id == user_id) == 1
    entries = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.delta).where(LedgerEntry.user_id == user_id)
    ).all()
    assert [tuple(entry) for entry in entries] == [("grant", credits_)]
    assert fresh(db, User, user_id).balance == credits_
    assert fresh(db, Order, order_id).status == "paid"


# --- a: the database connection drops during a webhook ----------------------------------


def kill_own_connection() -> None:
    """Terminate the PostgreSQL backend serving this session: the connection is gone."""
    _db.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


@pytest.mark.parametrize("moment", ["before_the_ledger_insert", "after_the_ledger_insert"])
def test_event_whose_database_connection_drops_is_retried_by_the_worker_and_grants_once(
    db, client, monkeypatch, moment
):
    user = make_user()
    order = make_order(user, "pro")
    event = make_event("checkout.session.completed", checkout_session(order))
    real_grant = credits.grant

    def grant_on_a_dying_connection(*args, **kwargs):
        if moment == "before_the_ledger_insert":
            kill_own_connection()
        lot = real_grant(*args, **kwargs)
        _db.session.flush()  # the lot and the ledger entry are written, not committed …
        kill_own_connection()  # … and then the connection is gone
        return lot

    monkeypatch.setattr(credits, "grant", grant_on_a_dying_connection)

    failed = post_event(client, event)

    assert failed.status_code == 200  # stored before the worker ever ran the handler
    assert not failed.applied_ok
    assert_no_grant(db, user.id, order.id)
    stored = fresh(db, StripeEvent, event["id"])
    assert stored.status == "retrying"
    assert "terminat" in stored.error  # PostgreSQL's "terminating connection …"

    monkeypatch.undo()  # the database is back; the worker's retry comes due
    retried = drain_inbox(client.application, now=stored.next_attempt_at)

    assert [r.outcome for r in retried] == ["fulfilled"]
    assert_granted_once(db, user.id, order.id)
    assert fresh(db, StripeEvent, event["id"]).status == "processed"
    # And a delivery of the same event again changes nothing.
    assert post_event(client, event).get_json()["outcome"] == "duplicate"
    assert_granted_once(db, user.id, order.id)


# --- b: Stripe answers 500, then 200, while a Checkout Session is created -----------------


@pytest.fixture
def stripe_app(make_app):
    """The real StripeGateway (a test key), talking to `responses` instead of Stripe."""
    return make_app(STRIPE_SECRET_KEY="sk_test_123", STRIPE_TIMEOUT_SECONDS=1)


def buy(client, path: str = "/checkout/pack/pro"):
    """Press Buy on the pricing page, as the customer's browser would."""
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token})


def a_customer(app, **fields) -> tuple:
    client = app.test_client()
    with app.app_context():
        user = make_user("buyer@example.com", **fields)
        log_in(client, user)
        return client, user.id


def test_stripe_500_then_200_creates_one_checkout_session_under_one_idempotency_key(stripe_app, db):
    client, user_id = a_customer(stripe_app, stripe_customer_id="cus_test_known")
    with responses.RequestsMock() as stripe:
        stripe.post(
            f"{STRIPE_API}/checkout/sessions",
            status=500,
            json={"error": {"type": "api_error", "message": "Something went wrong"}},
        )
        session = stripe_object("checkout_session", id="cs_test_after_a_500", url=CHECKOUT_URL)
        stripe.post(f"{STRIPE_API}/checkout/sessions", json=session)

        response = buy(client)

        keys = [call.request.headers["Idempotency-Key"] for call in stripe.calls]
        bodies = [call.request.body for call in stripe.calls]

    assert response.status_code == 303
    assert response.headers["Location"] == CHECKOUT_URL
    [order] = db.session.scalars(select(Order)).all()
    # Stripe saw the same request twice under one key, so at most one session exists.
    assert keys == [f"test-checkout-order-{order.id}"] * 2
    assert bodies[0] == bodies[1]
    assert (order.status, order.checkout_session_id) == ("pending", "cs_test_after_a_500")
    assert count(db, Order) == 1
    assert count(db, CreditLot) == 0  # paying is Stripe's part; the webhook grants


# --- c: Stripe times out on every attempt during checkout ---------------------------------


@pytest.mark.parametrize(
    "timeout",
    [requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout],
    ids=["connect-timeout", "read-timeout"],
)
def test_stripe_timing_out_during_checkout_shows_a_plain_message_and_nothing_is_paid(
    stripe_app, db, timeout
):
    client, user_id = a_customer(stripe_app, stripe_customer_id="cus_test_known")
    with responses.RequestsMock() as stripe:
        stripe.post(f"{STRIPE_API}/checkout/sessions", body=timeout("Stripe did not answer"))

        response = buy(client)

        attempts = len(stripe.calls)
        keys = {call.request.headers["Idempotency-Key"] for call in stripe.calls}

    page = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "We could not reach our payment provider" in page
    assert "Nothing was charged" in page
    assert "Traceback" not in page
    assert "Timeout" not in page  # the exception's name is not the customer's business
    assert "<!doctype html>" in page.lower()  # the site's own page, not a bare error
    [order] = db.session.scalars(select(Order)).all()
    assert attempts == 3  # the gateway retried, each time with the same key
    assert keys == {f"test-checkout-order-{order.id}"}
    assert order.status == "failed"
    assert order.paid_at is None
    assert order.checkout_session_id is None
    assert "could not reach our payment provider" in order.failure_reason
    assert fresh(db, User, user_id).balance == 0
    assert count(db, CreditLot) == 0
    assert count(db, LedgerEntry) == 0
    # What the customer's own order API says agrees: not paid.
    seen = client.get(f"/api/v1/orders/{order.id}").get_json()
    assert (seen["status"], seen["paid_at"]) == ("failed", None)


# --- d: Redis stops while anonymous visitors are generating --------------------------------


def wait_until_closed(port: int) -> None:
    """RunningServer.stop() only signals Redis; wait until the port refuses connections."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.01)
    raise AssertionError(f"Redis on port {port} did not stop")


def generate_on_the_page(client):
    """The generator form, submitted with the page's CSRF token (HTMX, as the page does)."""
    page = client.get("/generate")
    assert page.status_code == 200  # the page renders even with Redis gone
    token = csrf_token_from(page.get_data(as_text=True))
    data = {"prompt": "a lighthouse", "model": "standard", "csrf_token": token}
    return client.post("/generate", data=data, headers={"HX-Request": "true"})


def generate_by_api(client):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(
        "/api/v1/generations",
        json={"prompt": "x", "model": "standard"},
        headers={"X-CSRFToken": token},
    )


@pytest.fixture
def own_redis(make_app):
    """A Redis of this test's own, which the test may stop."""
    redis = servers.start_redis()
    yield redis
    redis.stop()
    # The limiter is one object shared by every app in this process and it remembers
    # that its storage died: point it back at the suite's Redis for the next test.
    make_app()
    limiter._storage_dead = False


def test_when_redis_stops_mid_run_the_anonymous_cap_still_holds_and_health_says_degraded(
    make_app, own_redis
):
    app = make_app(RATELIMIT_STORAGE_URI=own_redis.url, ANONYMOUS_DAILY_LIMIT=3)
    visitor = app.test_client()
    assert generate_on_the_page(visitor).status_code == 200
    assert visitor.get("/healthz").get_json()["rate_limit_storage"] == "ok"
    used_before_the_failure = 1

    own_redis.stop()
    wait_until_closed(own_redis.port)

    statuses = []
    for attempt in range(8):
        request = generate_on_the_page if attempt % 2 == 0 else generate_by_api
        statuses.append(request(visitor).status_code)

    assert all(status < 500 for status in statuses), statuses
    successes = [status for status in statuses if status in (200, 201)]
    # The per-process memory fallback starts counting from zero, so the visitor may
    # get up to the full allowance again here, but never more: limited, not unlimited.
    assert 1 <= len(successes) <= 3
    assert used_before_the_failure + len(successes) <= 3 + used_before_the_failure
    first_refusal = statuses.index(429)
    assert statuses[:first_refusal] == successes
    assert set(statuses[first_refusal:]) == {429}, statuses  # beyond the cap: 429, always
    capped = generate_by_api(visitor)
    assert capped.status_code == 429
    assert capped.get_json()["error"] == "rate_limit_exceeded"
    assert int(capped.headers["Retry-After"]) > 0

    # The rest of the site keeps working without Redis, log-in's own limits included.
    assert visitor.get("/pricing").status_code == 200
    login_page = visitor.get("/auth/login").get_data(as_text=True)
    login = visitor.post(
        "/auth/login",
        data={
            "email": "nobody@example.com",
            "password": "not the password",
            "csrf_token": csrf_token_from(login_page),
        },
    )
    assert login.status_code == 422

    health = visitor.get("/healthz")
    assert health.status_code == 200  # still serving: the balancer keeps it
    body = health.get_json()
    assert body["status"] == "degraded"
    assert body["database"] == "ok"
    assert body["rate_limit_storage"].startswith("unreachable")


# --- e: a gunicorn worker killed in the middle of a webhook -------------------------------


def plain_url(database_url: str) -> str:
    """The SQLAlchemy URL as libpq reads it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def waiting_backend(connection, *, timeout: float = 15.0) -> tuple[int, int]:
    """(pid, client_port) of the backend waiting for a row lock, once one is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = connection.execute(
            "SELECT pid, client_port FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError("no request ever waited for the user's row lock")


def wait_for_backend_to_end(connection, pid: int, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = connection.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        if row.fetchone() is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"the killed worker's backend {pid} is still there")


def deliver(base_url: str, event: dict) -> requests.Response:
    payload = json.dumps(event)
    return requests.post(
        f"{base_url}/stripe/webhook",
        data=payload,
        headers={"Stripe-Signature": signature_for(payload), "Content-Type": "application/json"},
        timeout=30,
    )


@pytest.mark.concurrency
def test_an_acknowledged_event_whose_worker_is_killed_mid_handler_is_applied_once_later(
    db, database_url, redis_server, tmp_path
):
    user = make_user()
    order = make_order(user, "pro")
    event = make_event("checkout.session.completed", checkout_session(order))

    with (
        gunicorn_server.serve(database_url, redis_server.url, tmp_path, workers=2) as site,
        psycopg.connect(plain_url(database_url), autocommit=True) as observer,
        psycopg.connect(plain_url(database_url)) as blocker,
    ):
        # Another transaction holds the customer's row, so the worker's transaction
        # stops at credits.lock_user, after it has claimed the event and locked the order.
        blocker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user.id,))
        acknowledged = deliver(site.url, event)
        assert acknowledged.status_code == 200  # Stripe will not send it again

        doomed = worker_process.start(database_url, redis_server.url, tmp_path, name="doomed")
        backend_pid, _ = waiting_backend(observer)
        doomed.kill()  # SIGKILL mid-handler
        blocker.rollback()  # release the customer's row
        wait_for_backend_to_end(observer, backend_pid)

        # Nothing of the worker's transaction was committed; the event still waits.
        assert_no_grant(db, user.id, order.id)
        assert fresh(db, StripeEvent, event["id"]).status == "queued"

        with worker_process.running(database_url, redis_server.url, tmp_path):
            worker_process.wait_until(
                lambda: fresh(db, StripeEvent, event["id"]).status == "processed",
                message="the next worker never applied the event",
            )
        assert_granted_once(db, user.id, order.id)
        assert deliver(site.url, event).json()["queued"] is False
        assert_granted_once(db, user.id, order.id)
