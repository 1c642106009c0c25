"""The lean hot paths (issue 15, item 6): what the account page and a generation send
to PostgreSQL, and that the shortcuts change nothing anyone can observe.

Counted, never timed: the statements, locks and transactions each request sends
(engine events on the app's own engine), which is what made these paths costly.
"""

import contextlib
import time

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, select, text

from billing_site import credits
from billing_site.extensions import db as _db
from billing_site.models import Generation, User
from tests import test_failures
from tests.api_helpers import bearer, make_key
from tests.conftest import csrf_token_from, post_json
from tests.factories import logged_in, make_customer


class Recorder:
    """The SQL statements, COMMITs and ROLLBACKs an app's engine sends meanwhile."""

    def __init__(self):
        self.statements, self.ends = [], []

    def statement(self, connection, cursor, statement, *args):
        self.statements.append(" ".join(statement.split()))

    def matching(self, start: str, contains: str = "") -> list[str]:
        return [s for s in self.statements if s.startswith(start) and contains in s]


@contextlib.contextmanager
def recorded(app: Flask):
    with app.app_context():
        engine = _db.engine
    recorder = Recorder()
    listeners = [
        ("before_cursor_execute", recorder.statement),
        ("commit", lambda connection: recorder.ends.append("COMMIT")),
        ("rollback", lambda connection: recorder.ends.append("ROLLBACK")),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield recorder
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


def balance_in_database(app, user_id: int) -> int:
    with app.app_context():
        return _db.session.scalar(select(User.balance).where(User.id == user_id))


# --- the account page -----------------------------------------------------------------


def test_account_page_reads_the_subscription_once_and_commits_instead_of_rolling_back(app, client):
    user_id = make_customer(app, balance=7, tier="basic")
    logged_in(client, app, user_id)
    client.get("/account")  # the month's first view grants nothing on a paid plan, but warms up

    with recorded(app) as sql:
        page = client.get("/account")

    assert page.status_code == 200
    assert "Basic" in page.get_data(as_text=True)
    # Once, though the plan card, the header's badge and the plan choices all ask.
    assert len(sql.matching("SELECT subscriptions.")) == 1
    assert not [s for s in sql.statements if not s.startswith("SELECT")]
    # Read-only: committed, so psycopg keeps its prepared statements for the next view.
    assert sql.ends == ["COMMIT"]


def test_a_request_that_wrote_without_committing_is_still_rolled_back(make_app):
    app = make_app()
    user_id = make_customer(app)

    @app.get("/_test/write-and-forget")
    def write_and_forget():
        _db.session.get(User, user_id).balance = 1_000
        _db.session.flush()  # written to the transaction, never committed
        return "ok"

    @app.get("/_test/write-unflushed")
    def write_unflushed():
        _db.session.get(User, user_id).balance = 2_000
        return "ok"

    client = app.test_client()
    with recorded(app) as sql:
        assert client.get("/_test/write-and-forget").status_code == 200
        assert client.get("/_test/write-unflushed").status_code == 200

    assert sql.ends == ["ROLLBACK", "ROLLBACK"]
    assert balance_in_database(app, user_id) == 0


def test_a_failed_request_commits_nothing(make_app):
    app = make_app()
    user_id = make_customer(app)

    @app.get("/_test/read-then-fail")
    def read_then_fail():
        _db.session.get(User, user_id).balance = 3_000
        _db.session.flush()
        raise RuntimeError("boom")

    assert app.test_client().get("/_test/read-then-fail").status_code == 500
    assert balance_in_database(app, user_id) == 0


# --- a generation -----------------------------------------------------------------------


def test_a_generation_locks_the_user_once_in_two_transactions_and_answers_the_rows_balance(
    app, client
):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    post_json(client, "/api/v1/generations", {"prompt": "warm-up", "model": "standard"})
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    with recorded(app) as sql:
        answer = client.post(
            "/api/v1/generations",
            json={"prompt": "a cat", "model": "hd"},
            headers={"X-CSRFToken": token},
        )

    assert answer.status_code == 201
    body = answer.get_json()
    assert body["balance_after"] == balance_in_database(app, user_id) == 5 - 1 - 2
    assert len(sql.matching("SELECT users.", "FOR UPDATE")) == 1
    # Once, though the limiter's exemption, the tier check and the allowance all ask.
    assert len(sql.matching("SELECT subscriptions.")) == 1
    # The reserve and the finish; the answer needs no transaction of its own.
    assert sql.ends == ["COMMIT", "COMMIT"]
    assert not sql.matching("SELECT generations.")  # nothing re-read after its commits
    # Only the lots it spends from: with 2 of a 5-credit top-up left, the
    # low-balance check compares the locked row's last_top_up_credits and asks nothing.
    assert len(sql.matching("SELECT credit_lots.")) == 1
    with app.app_context():
        generation = _db.session.get(Generation, body["id"])
        assert (generation.status, generation.model, generation.credits_charged) == (
            "succeeded",
            "hd",
            2,
        )
        assert generation.result.startswith("<svg")


def test_a_generation_the_balance_cannot_cover_is_refused_before_anything_is_written(app, client):
    user_id = make_customer(app, balance=1, tier="basic")
    logged_in(client, app, user_id)
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    with recorded(app) as sql:
        answer = client.post(
            "/api/v1/generations",
            json={"prompt": "a cat", "model": "hd"},  # costs 2
            headers={"X-CSRFToken": token},
        )

    assert answer.status_code == 402
    assert (answer.get_json()["balance"], answer.get_json()["cost"]) == (1, 2)
    assert len(sql.matching("SELECT users.", "FOR UPDATE")) == 1  # decided under the lock
    assert not [s for s in sql.statements if not s.startswith("SELECT")]
    assert sql.ends == ["ROLLBACK"]
    assert balance_in_database(app, user_id) == 1
    with app.app_context():
        assert (
            _db.session.scalar(select(Generation.id).where(Generation.user_id == user_id)) is None
        )


def test_a_generation_by_api_key_reads_the_key_and_its_owner_in_one_statement(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    headers = bearer(make_key(app, user_id))
    client.post("/api/v1/generations", json={"prompt": "warm-up"}, headers=headers)

    with recorded(app) as sql:
        answer = client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=headers)

    assert answer.status_code == 201
    assert answer.get_json()["balance_after"] == balance_in_database(app, user_id) == 3
    # Once: the admin-scope check after the answer reads the key as authenticated.
    [key_read] = sql.matching("SELECT api_keys.")
    assert "JOIN users" in key_read
    # The owner came with the key: the lock re-reads only the ledger's columns.
    assert sql.matching("SELECT users.") == sql.matching("SELECT users.balance", "FOR UPDATE")
    assert len(sql.matching("SELECT users.")) == 1


def test_locking_a_user_the_session_holds_rereads_what_another_transaction_committed(app):
    user_id = make_customer(app, balance=5)
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        user = _db.session.get(User, user_id)  # loaded, as a request's log-in loads it
        assert user.balance == 5
        with other.begin() as connection:  # a spend elsewhere commits meanwhile
            connection.execute(text("UPDATE users SET balance = 4 WHERE id = :id"), {"id": user_id})
        with recorded(app) as sql:
            locked = credits.lock_user(user_id)

        assert locked is user and user.balance == 4
        # Only the ledger's columns are read again, under the lock.
        assert sql.statements == sql.matching("SELECT users.balance, users.next_expiry_at")
        assert len(sql.statements) == 1 and "FOR UPDATE" in sql.statements[0]
        _db.session.rollback()
    other.dispose()


def test_locking_a_user_with_unflushed_changes_flushes_them_and_reads_the_row(app):
    user_id = make_customer(app, balance=5)
    with app.app_context():
        user = _db.session.get(User, user_id)
        user.next_expiry_at = None
        user.balance = 7  # not flushed yet: the full lock flushes it first
        with recorded(app) as sql:
            assert credits.lock_user(user_id).balance == 7
        assert sql.matching("UPDATE users")
        assert sql.matching("SELECT users.id", "FOR UPDATE")
        _db.session.rollback()


def test_the_balance_answered_is_the_balance_after_each_generation(app, client):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    balances = []
    for prompt in ("one", "two", "three"):
        answer = post_json(client, "/api/v1/generations", {"prompt": prompt, "model": "standard"})
        balances.append((answer.status_code, answer.get_json()["balance_after"]))
        assert answer.get_json()["balance_after"] == balance_in_database(app, user_id)
    # The free tier's monthly credits arrive with the first generation of the month.
    free = balances[0][1] + 1 - 3
    assert balances == [(201, 3 + free - 1), (201, 3 + free - 2), (201, 3 + free - 3)]


# --- connections -----------------------------------------------------------------------


PRODUCTION_ENGINE_OPTIONS = {"pool_recycle": 3600}  # config.py's: no pool_pre_ping


def kill_every_other_backend(app) -> int:
    """Terminate every client backend but our own: the app's pooled connections die idle.

    Returns once they are gone: pg_terminate_backend only signals, and a backend
    still exiting would answer the pool's ping (a connection dying between the
    ping and its use is another case, which no ping can cover).
    """
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.connect() as connection:
        others = connection.execute(OTHER_BACKENDS).scalars().all()
        for pid in others:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        while backends_alive(connection, others) and time.monotonic() < deadline:
            time.sleep(0.02)
    engine.dispose()
    return len(others)


OTHER_BACKENDS = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


def backends_alive(connection, pids: list[int]) -> int:
    connection.rollback()  # pg_stat_activity is read once per transaction: a fresh one
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
    return connection.execute(alive, {"pids": pids}).scalar_one()


def test_without_pre_ping_a_connection_killed_while_idle_is_replaced_before_use(make_app):
    app = make_app(
        SQLALCHEMY_ENGINE_OPTIONS=PRODUCTION_ENGINE_OPTIONS, DATABASE_IDLE_PING_SECONDS=0
    )
    user_id = make_customer(app, balance=5)
    client = app.test_client()
    logged_in(client, app, user_id)
    assert client.get("/account").status_code == 200

    assert kill_every_other_backend(app) >= 1

    assert client.get("/account").status_code == 200
    assert client.get("/account").status_code == 200


@pytest.mark.parametrize("moment", ["before_the_ledger_insert", "after_the_ledger_insert"])
def test_the_dropped_connection_drill_passes_without_pre_ping(make_app, monkeypatch, moment):
    """tests/test_failures.py's drill, on the production engine options."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=PRODUCTION_ENGINE_OPTIONS)
    with app.app_context():
        test_failures.test_event_whose_database_connection_drops_is_retried_by_the_worker_and_grants_once(
            _db, app.test_client(), monkeypatch, moment
        )
        _db.session.remove()


def test_a_paid_checkout_writes_each_row_once_and_books_every_column(app, db, client):
    from billing_site.models import Order
    from tests.factories import make_order, make_user
    from tests.stripe_events import checkout_session, make_event, post_event

    order = make_order(make_user(), "pro")
    session = checkout_session(order)
    order_id, user_id = order.id, order.user_id
    event = make_event("checkout.session.completed", session)

    with recorded(app) as sql:
        assert post_event(client, event).applied_ok

    # The order and the balance each written by one UPDATE, not again by a flush.
    assert len(sql.matching("UPDATE orders")) == 1
    assert len(sql.matching("UPDATE users")) == 1
    with app.app_context():
        paid = _db.session.get(Order, order_id)
        assert (paid.status, paid.payment_intent_id) == ("paid", f"pi_for_order_{order_id}")
        # Booked from what Stripe reported (the subtotal was unknown until now).
        assert paid.amount_subtotal_cents == paid.amount_cents == session["amount_total"]
        assert paid.paid_at is not None and paid.updated_at >= paid.paid_at
        assert balance_in_database(app, user_id) == paid.credits
