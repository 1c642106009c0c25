"""Idempotency-Key on the API's POSTs (issue 11, item 3; TESTING.md row 44).

The claim is a row with a unique (owner, key) taken before the work, so twenty
parallel duplicates over real HTTP on PostgreSQL make one generation and one charge,
and all twenty get the same answer.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import requests
from sqlalchemy import func, select

from billing_site.extensions import db
from billing_site.models import Generation, IdempotencyKey, LedgerEntry, Order
from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.factories import make_customer

PARALLEL = 20


def counts(app, user_id: int) -> tuple[int, int, int]:
    with app.app_context():
        generations = db.session.scalar(select(func.count()).where(Generation.user_id == user_id))
        spends = db.session.scalar(
            select(func.count()).where(LedgerEntry.user_id == user_id, LedgerEntry.kind == "spend")
        )
        balance = db.session.scalar(
            select(LedgerEntry.balance_after)
            .where(LedgerEntry.user_id == user_id)
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        )
        return generations, spends, balance


def test_twenty_parallel_duplicates_make_one_generation_and_one_charge(app, live_server):
    user_id = make_customer(app, balance=50, tier="basic")
    key = make_key(app, user_id)
    headers = bearer(key, **{"Idempotency-Key": "gen-0001"})

    def post(_):
        response = requests.post(
            f"{live_server}/api/v1/generations",
            json={"prompt": "a lighthouse at dusk", "model": "hd"},
            headers=headers,
            timeout=60,
        )
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        answers = list(pool.map(post, range(PARALLEL)))

    assert {status for status, _ in answers} == {201}
    assert len({body for _, body in answers}) == 1  # twenty identical answers
    assert counts(app, user_id) == (1, 1, 48)  # one generation, one charge of 2 credits
    body = requests.get(f"{live_server}/api/v1/me", headers=bearer(key), timeout=10).json()
    assert body["balance"] == 48


def test_a_retry_replays_the_first_answer_without_charging_again(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    key = make_key(app, user_id)
    headers = bearer(key, **{"Idempotency-Key": "retry-1"})

    first = client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=headers)
    again = client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=headers)
    # The same JSON with its keys in another order is the same request.
    reordered = client.post(
        "/api/v1/generations",
        data='{ "prompt" : "a cat" }',
        headers=headers,
        content_type="application/json",
    )

    assert first.status_code == again.status_code == reordered.status_code == 201
    assert first.json == again.json == reordered.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json["model"] == "standard"  # the default model
    assert counts(app, user_id) == (1, 1, 4)


def test_the_same_key_with_another_body_is_422_idempotency_key_reused(app, client):
    user_id = make_customer(app, balance=5)
    key = make_key(app, user_id)
    headers = bearer(key, **{"Idempotency-Key": "k"})

    client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=headers)
    other = client.post("/api/v1/generations", json={"prompt": "a dog"}, headers=headers)

    assert_error_shape(other, 422, "idempotency_key_reused")
    assert counts(app, user_id)[:2] == (1, 1)


def test_keys_belong_to_their_owner_and_a_failure_gives_the_key_back(app, client):
    first_id, second_id = make_customer(app, balance=5), make_customer(app, balance=0)
    first, second = make_key(app, first_id), make_key(app, second_id)
    headers = {"Idempotency-Key": "shared-name"}

    mine = client.post(
        "/api/v1/generations", json={"prompt": "a"}, headers=bearer(first, **headers)
    )
    # Another customer's same key is their own: a real request, refused for their balance
    # (10 free credits were granted, so spend them first).
    for _ in range(10):
        client.post("/api/v1/generations", json={"prompt": "b"}, headers=bearer(second))
    theirs = client.post(
        "/api/v1/generations", json={"prompt": "a"}, headers=bearer(second, **headers)
    )

    assert mine.status_code == 201
    assert_error_shape(theirs, 402, "insufficient_credits")
    with app.app_context():
        # The refusal kept no claim: after a top-up, the same key can go through.
        owners = db.session.scalars(select(IdempotencyKey.owner)).all()
        assert owners == [f"user:{first_id}"]


def test_checkout_with_one_key_opens_one_session(app, client):
    user_id = make_customer(app)
    key = make_key(app, user_id)
    headers = bearer(key, **{"Idempotency-Key": "buy-pro"})

    answers = [
        client.post("/api/v1/checkout", json={"pack": "pro"}, headers=headers) for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.json["session_id"] for a in answers}) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Order)) == 1


def test_a_malformed_idempotency_key_is_400(app, client):
    key = make_key(app, make_customer(app))
    response = client.post(
        "/api/v1/generations",
        json={"prompt": "a cat"},
        headers=bearer(key, **{"Idempotency-Key": "x" * 256}),
    )
    assert_error_shape(response, 400, "invalid_idempotency_key")


def test_claims_expire_after_a_day_and_are_purged(app, client, runner):
    user_id = make_customer(app, balance=5)
    key = make_key(app, user_id)
    headers = bearer(key, **{"Idempotency-Key": "old"})
    client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=headers)
    with app.app_context():
        claim = db.session.scalars(select(IdempotencyKey)).one()
        claim.created_at -= timedelta(hours=25)
        db.session.commit()

    # Past 24 hours the key is free again: a new request, charged again.
    again = client.post("/api/v1/generations", json={"prompt": "a dog"}, headers=headers)
    assert again.status_code == 201
    assert counts(app, user_id)[:2] == (2, 2)
    with app.app_context():
        claim = db.session.scalars(select(IdempotencyKey)).one()
        claim.created_at -= timedelta(hours=25)
        db.session.commit()
    result = runner.invoke(args=["purge-idempotency-keys"])
    assert result.output == "Deleted 1 expired idempotency key(s).\n"
