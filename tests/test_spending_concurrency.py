"""Parallel generations against one balance, over real HTTP, on PostgreSQL.

Each request locks the user's row before checking the balance, so N parallel
generations against B credits succeed exactly min(N, B) times.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from billing_site import credits
from billing_site.extensions import db
from billing_site.models import Generation, LedgerEntry
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_subscription, make_user

PARALLEL = 50


def customer_with(app, balance: int) -> tuple[int, str, str]:
    """A Basic customer (no free allowance to muddy the count), their cookie and CSRF token."""
    with app.app_context():
        user = make_user()
        make_subscription(user, tier="basic")
        credits.grant(
            user.id, balance, source="admin", source_ref=f"test-{user.id}", expires_at=None
        )
        db.session.commit()
        user_id = user.id
    client = app.test_client()
    with app.app_context():
        log_in(client, db.session.get(type(user), user_id))
    token = csrf_token_from(client.get("/generate").get_data(as_text=True))
    return user_id, client.get_cookie("session").value, token


def generate_in_parallel(live_server: str, cookie: str, token: str) -> list[int]:
    def one(_):
        with requests.Session() as session:
            session.cookies.set("session", cookie)
            response = session.post(
                f"{live_server}/api/v1/generations",
                json={"prompt": "a race", "model": "standard"},
                headers={"X-CSRFToken": token},
                timeout=60,
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(one, range(PARALLEL)))


def spends_and_balance(app, user_id: int) -> tuple[int, int, int]:
    with app.app_context():
        spends = db.session.execute(
            select(func.count()).where(LedgerEntry.user_id == user_id, LedgerEntry.kind == "spend")
        ).scalar_one()
        succeeded = db.session.execute(
            select(func.count()).where(
                Generation.user_id == user_id, Generation.status == "succeeded"
            )
        ).scalar_one()
        lowest = db.session.execute(
            select(func.min(LedgerEntry.balance_after)).where(LedgerEntry.user_id == user_id)
        ).scalar_one()
        assert lowest >= 0, "the balance went negative at some point"
        return spends, succeeded, credits.current_balance(user_id)


@pytest.mark.concurrency
def test_fifty_parallel_generations_against_one_credit_succeed_once(app, live_server):
    user_id, cookie, token = customer_with(app, balance=1)
    statuses = generate_in_parallel(live_server, cookie, token)
    assert statuses.count(201) == 1
    assert statuses.count(402) == PARALLEL - 1
    assert spends_and_balance(app, user_id) == (1, 1, 0)


@pytest.mark.concurrency
def test_fifty_parallel_generations_against_five_credits_succeed_five_times(app, live_server):
    user_id, cookie, token = customer_with(app, balance=5)
    statuses = generate_in_parallel(live_server, cookie, token)
    assert statuses.count(201) == 5
    assert statuses.count(402) == PARALLEL - 5
    assert spends_and_balance(app, user_id) == (5, 5, 0)
