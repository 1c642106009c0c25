"""The worker as a real process (`flask --app wsgi worker`) on the test PostgreSQL.

Issue 15, item 8 (TESTING.md rows 46-47): two workers racing on 1,000 events
apply each once; one of two workers SIGKILLed again and again while they drain
1,000 events loses and doubles nothing; a failing handler is retried with backoff, then dead; the
scheduled jobs run once per slot with two workers; a worker woken by NOTIFY
applies within a moment although it polls rarely; batches: a failing event in
one, a backlog a batch at a time, and two batches PostgreSQL finds deadlocked on
their customers (one is failed and applied again event by event). The webhook's side (stored,
or 503 with the database down) is here too; the SIGKILL-mid-handler drill is
tests/test_failures.py's row e.
"""

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from billing_site import credits, worker
from billing_site.extensions import db as _db
from billing_site.models import (
    CreditLot,
    Generation,
    IdempotencyKey,
    JobRun,
    LedgerEntry,
    Order,
    StripeEvent,
    User,
    WorkerHeartbeat,
    utcnow,
)
from billing_site.webhook import services
from tests import worker_process
from tests.factories import make_order, make_user
from tests.servers import free_port
from tests.stripe_events import checkout_session, drain_inbox, make_event, post_event

pytestmark = pytest.mark.concurrency
KILLS = 8


def count(model, *criteria) -> int:
    _db.session.expire_all()
    return _db.session.scalar(select(func.count()).select_from(model).where(*criteria))


def statuses() -> dict[str, int]:
    _db.session.expire_all()
    rows = _db.session.execute(
        select(StripeEvent.status, func.count()).group_by(StripeEvent.status)
    ).all()
    return dict(rows)


def applied_lines(worker) -> int:
    return len(re.findall(r"webhook event_id=\S+ .*outcome=fulfilled", worker.log.read_text()))


def thousand_paid_order_events(db) -> tuple[list[dict], int]:
    """1,000 pending orders over 20 customers, and each one's checkout.session.completed."""
    users = [make_user() for _ in range(20)]
    template = make_order(users[0], "starter")
    orders = [template] + [
        Order(
            user_id=users[n % 20].id,
            kind="pack",
            item_id="starter",
            amount_cents=template.amount_cents,
            currency=template.currency,
            credits=template.credits,
            checkout_session_id=f"cs_race_{n:04d}",
        )
        for n in range(1, 1000)
    ]
    db.session.add_all(orders)
    db.session.commit()  # one commit, not a thousand
    events = [make_event("checkout.session.completed", checkout_session(o)) for o in orders]
    return events, template.credits


def assert_each_applied_once(db, credits_each: int) -> None:
    """0 lost, 0 doubled: one grant per event, every order paid, balances to match."""
    assert statuses() == {"processed": 1000}
    assert count(LedgerEntry, LedgerEntry.kind == "grant") == 1000
    doubled = db.session.execute(
        select(LedgerEntry.stripe_event_id, func.count())
        .where(LedgerEntry.kind == "grant")
        .group_by(LedgerEntry.stripe_event_id)
        .having(func.count() > 1)
    ).all()
    assert doubled == []
    assert count(Order, Order.status != "paid") == 0
    assert db.session.scalar(select(func.sum(User.balance))) == 1000 * credits_each
    assert count(CreditLot) == 1000


def test_two_workers_racing_on_1000_events_apply_each_exactly_once(
    db, client, database_url, redis_server, tmp_path
):
    events, credits_each = thousand_paid_order_events(db)

    # Polling every 30 s: only NOTIFY can make them this quick.
    with worker_process.running(
        database_url, redis_server.url, tmp_path, count=2, WORKER_POLL_SECONDS=30
    ) as workers:
        worker_process.wait_until(
            lambda: count(WorkerHeartbeat) == 2, timeout=90, message="workers not up"
        )
        # Nicer than the web process, which answers Stripe first (WORKER_NICENESS).
        web_niceness = os.getpriority(os.PRIO_PROCESS, 0)
        nicer = min(19, web_niceness + 19)  # the kernel's ceiling
        assert [os.getpriority(os.PRIO_PROCESS, w.pid) for w in workers] == [nicer] * 2
        for event in events:
            assert post_event(client, event, apply=False).status_code == 200
        worker_process.wait_until(
            lambda: statuses() == {"processed": 1000}, timeout=180, message="not all applied"
        )

    assert_each_applied_once(db, credits_each)
    assert count(StripeEvent, StripeEvent.attempts != 1) == 0
    # And both really worked: the thousand applications are split between them.
    done = [applied_lines(worker) for worker in workers]
    assert sum(done) == 1000 and min(done) > 0, done


def test_a_worker_sigkilled_again_and_again_during_the_drain_loses_and_doubles_nothing(
    db, database_url, redis_server, tmp_path
):
    events, credits_each = thousand_paid_order_events(db)
    for event in events:
        services.receive_event(event)  # stored, as the webhook stores them

    kills = 0
    with worker_process.running(database_url, redis_server.url, tmp_path, count=2) as workers:
        # Eight SIGKILLs at random moments (mid-handler, mid-commit, idle), then both drain.
        while kills < KILLS and statuses() != {"processed": 1000}:
            worker_process.wait_until(
                lambda: "started" in workers[0].log.read_text(), timeout=90, message="no start"
            )
            time.sleep(random.uniform(0.2, 1.0))  # let it work a little …
            workers[0].kill()  # … then SIGKILL
            kills += 1
            workers[0] = worker_process.start(
                database_url, redis_server.url, tmp_path, name=f"killed{kills}"
            )
        worker_process.wait_until(
            lambda: statuses() == {"processed": 1000}, timeout=900, message="not drained"
        )

    assert kills >= 2
    assert_each_applied_once(db, credits_each)


def test_a_failing_handler_is_retried_with_backoff_then_dead(
    db, client, database_url, redis_server, tmp_path
):
    # A dispute with no id: its handler raises KeyError on every attempt.
    broken = make_event("charge.dispute.created", {"object": "dispute", "status": "lost"})
    assert post_event(client, broken, apply=False).status_code == 200
    seen: list[tuple[int, str, object]] = []

    def record():
        db.session.expire_all()
        stored = db.session.get(StripeEvent, broken["id"])
        state = (stored.attempts, stored.status, stored.next_attempt_at)
        if not seen or seen[-1][:2] != state[:2]:
            seen.append(state)
        return stored.status == "dead"

    started = time.monotonic()
    with worker_process.running(
        database_url,
        redis_server.url,
        tmp_path,
        WORKER_RETRY_BASE_SECONDS=0.4,
        WORKER_MAX_ATTEMPTS=3,
        WORKER_POLL_SECONDS=0.05,
    ):
        worker_process.wait_until(record, timeout=90, interval=0.02, message="never dead")
    elapsed = time.monotonic() - started

    assert [(attempts, status) for attempts, status, _ in seen] == [
        (0, "queued"),
        (1, "retrying"),
        (2, "retrying"),
        (3, "dead"),
    ]
    stored = db.session.get(StripeEvent, broken["id"])
    assert "Traceback" in stored.error and "KeyError" in stored.error
    assert stored.next_attempt_at is None
    # Backoff: 0.4 s after the first failure, 0.8 s after the second.
    assert elapsed >= 1.2
    first_retry_at, second_retry_at = seen[1][2], seen[2][2]
    assert second_retry_at - first_retry_at >= timedelta(seconds=0.8)


def test_scheduled_jobs_run_once_per_slot_with_two_workers(
    db, database_url, redis_server, tmp_path
):
    user = make_user()
    credits.grant(
        user.id, 5, source="grant", source_ref="old", expires_at=utcnow() - timedelta(minutes=1)
    )
    db.session.commit()

    with worker_process.running(database_url, redis_server.url, tmp_path, count=2) as workers:
        worker_process.wait_until(
            lambda: count(JobRun, JobRun.finished_at.is_not(None)) >= 3,
            timeout=90,
            message="the three jobs did not all run",
        )
        time.sleep(1.5)  # both workers have had several chances to run them again
        assert all(worker.process.poll() is None for worker in workers)

    runs = db.session.execute(select(JobRun.job, JobRun.slot, JobRun.outcome)).all()
    per_job: dict[str, int] = {}
    for job, _slot, _outcome in runs:
        per_job[job] = per_job.get(job, 0) + 1
    # One run each (sweep-generations may have crossed into the next minute's slot).
    assert per_job["expire-credits"] == 1 and per_job["reconcile"] == 1
    assert per_job["sweep-generations"] in (1, 2)
    outcomes = {job: outcome for job, _slot, outcome in runs}
    assert outcomes["expire-credits"] == "expired 1 lot(s)"
    assert count(LedgerEntry, LedgerEntry.kind == "expire") == 1
    assert db.session.get(User, user.id).balance == 0
    assert count(Generation) == 0


def test_housekeeping_jobs_purge_old_idempotency_claims_and_old_job_runs(db):
    from billing_site.worker.jobs import JOBS

    old, fresh = utcnow() - timedelta(days=31), utcnow()
    for key, created in (("old", old - timedelta(days=1)), ("fresh", fresh)):
        db.session.add(
            IdempotencyKey(owner="user:1", key=key, request_hash="0" * 64, created_at=created)
        )
    for slot, finished in ((1, old), (2, fresh), (3, None)):
        db.session.add(
            JobRun(job="sweep-generations", slot=slot, worker_id="w", finished_at=finished)
        )
    db.session.commit()

    assert JOBS["purge-idempotency-keys"].run() == "deleted 1 expired idempotency key(s)"
    assert JOBS["prune-job-history"].run() == "deleted 1 job run(s) older than 30 days"

    assert db.session.scalars(select(IdempotencyKey.key)).all() == ["fresh"]
    assert sorted(db.session.scalars(select(JobRun.slot))) == [2, 3]  # unfinished runs stay


def test_the_webhook_only_stores_and_a_worker_applies(db, client):
    user = make_user()
    order = make_order(user, "pro")
    event = make_event("checkout.session.completed", checkout_session(order))

    response = post_event(client, event, apply=False)

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "event_id": event["id"], "queued": True}
    stored = db.session.get(StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("queued", 0)
    assert count(LedgerEntry) == 0  # nothing applied inside the request
    assert post_event(client, event).outcome == "fulfilled"


def test_a_webhook_while_the_database_is_down_answers_503_in_the_flat_shape(make_app):
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/billing"
    client = make_app(SQLALCHEMY_DATABASE_URI=closed).test_client()
    event = make_event("checkout.session.completed", {"object": "checkout.session", "id": "cs_x"})

    response = post_event(client, event)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    body = response.get_json()
    assert body["error"] == "database_unavailable"
    assert "deliver it again" in body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_connection_lost_before_the_commit_answers_503_and_stores_nothing(db, client):
    user = make_user()
    event = make_event("checkout.session.completed", checkout_session(make_order(user, "pro")))

    def connection_dies(connection, cursor, statement, *args):
        # The row is inserted (not committed) when the connection goes away.
        if "INSERT INTO stripe_events" in statement:
            connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    sa_event.listen(_db.engine, "after_cursor_execute", connection_dies)
    try:
        failed = post_event(client, event)
    finally:
        sa_event.remove(_db.engine, "after_cursor_execute", connection_dies)

    assert failed.status_code == 503
    assert count(StripeEvent) == 0  # nothing half-written: Stripe's retry starts afresh
    retried = post_event(client, event)
    assert (retried.status_code, retried.outcome) == (200, "fulfilled")
    assert count(LedgerEntry, LedgerEntry.kind == "grant") == 1


def test_a_batch_with_a_failing_event_applies_the_others_once_and_retries_that_one(db, client):
    # Five paid checkouts with a broken dispute in the middle, all due at once: the
    # worker claims them as one batch; the dispute's handler raises (no id).
    user = make_user()
    orders = [make_order(user, "starter") for _ in range(5)]
    paid = [make_event("checkout.session.completed", checkout_session(o)) for o in orders]
    broken = make_event("charge.dispute.created", {"object": "dispute", "status": "lost"})
    for event in paid[:2] + [broken] + paid[2:]:
        assert post_event(client, event, apply=False).status_code == 200

    applied = drain_inbox(client.application)

    assert sorted(result.ok for result in applied) == [False] + [True] * 5
    db.session.expire_all()
    broken_row = db.session.get(StripeEvent, broken["id"])
    assert (broken_row.status, broken_row.attempts) == ("retrying", 1)
    for event in paid:  # rolled back with the batch, then applied once on its own
        stored = db.session.get(StripeEvent, event["id"])
        assert (stored.status, stored.outcome, stored.attempts) == ("processed", "fulfilled", 1)
    assert count(LedgerEntry, LedgerEntry.kind == "grant") == 5
    assert db.session.get(User, user.id).balance == 5 * orders[0].credits


def test_a_backlog_is_claimed_and_committed_a_batch_at_a_time(db, client):
    user = make_user()
    orders = [make_order(user, "starter") for _ in range(12)]
    for order in orders:
        event = make_event("checkout.session.completed", checkout_session(order))
        assert post_event(client, event, apply=False).status_code == 200
    commits = []

    def count_commit(connection):
        commits.append(connection)

    sa_event.listen(_db.engine, "commit", count_commit)
    try:
        applied = drain_inbox(client.application)
    finally:
        sa_event.remove(_db.engine, "commit", count_commit)

    assert [result.outcome for result in applied] == ["fulfilled"] * 12
    assert len(commits) == 2  # WORKER_BATCH_SIZE 10: a batch of 10, then one of 2
    assert statuses() == {"processed": 12}
    assert db.session.get(User, user.id).balance == 12 * orders[0].credits


def test_two_batches_that_deadlock_on_their_customers_still_apply_each_event_once(
    app, db, client, caplog
):
    # Four paid checkouts, X1 Y1 | Y2 X2: one worker claims the first two, the other
    # the last two, and each stops at its first grant, holding its first customer,
    # until both are there. Then each wants the customer the other holds.
    x, y = make_user(), make_user()
    orders = [make_order(x, "starter"), make_order(y, "starter")]
    orders += [make_order(y, "starter"), make_order(x, "starter")]
    events = [make_event("checkout.session.completed", checkout_session(o)) for o in orders]
    for event in events:
        assert post_event(client, event, apply=False).status_code == 200
    both_hold_a_customer = threading.Barrier(2, timeout=20)
    first_claimed = threading.Event()
    waited = threading.local()
    real_grant = credits.grant

    def grant_meeting_the_other_worker(*args, **kwargs):
        if not getattr(waited, "done", False):
            waited.done = True
            first_claimed.set()
            both_hold_a_customer.wait()
        return real_grant(*args, **kwargs)

    def worker_batch():
        with app.app_context():
            try:
                return worker.apply_next(limit=2)
            finally:
                _db.session.remove()

    credits.grant = grant_meeting_the_other_worker
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(worker_batch)
            assert first_claimed.wait(timeout=20)  # the first batch is claimed and held
            second = pool.submit(worker_batch)
            applied = first.result(timeout=60) + second.result(timeout=60)
    finally:
        credits.grant = real_grant

    assert sorted(result.event_id for result in applied) == sorted(e["id"] for e in events)
    assert all(result.ok and result.outcome == "fulfilled" for result in applied)
    # PostgreSQL broke the deadlock by failing one batch, which was then applied event by event.
    assert "applying each on its own" in caplog.text and "deadlock" in caplog.text
    assert statuses() == {"processed": 4}
    assert count(LedgerEntry, LedgerEntry.kind == "grant") == 4
    for user in (x, y):
        assert db.session.get(User, user.id).balance == 2 * orders[0].credits
