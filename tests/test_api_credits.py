"""POST /api/v1/credits/check (issue 11, item 3): the same rules as a generation, asked
without spending; anonymous callers get the anonymous cap's view."""

from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.factories import make_customer


def test_an_anonymous_caller_sees_the_free_cap_and_it_counts_down(client):
    fresh = client.post("/api/v1/credits/check", json={})

    assert fresh.status_code == 200
    assert fresh.json["free_uses_remaining"] == 3
    assert (fresh.json["has_credit"], fresh.json["plan"], fresh.json["reason"]) == (
        True,
        None,
        None,
    )
    assert (fresh.json["balance"], fresh.json["unlimited"]) == (0, False)
    assert fresh.json["purchase_required"] is False
    assert fresh.json["signup_url"] == "http://localhost/auth/signup"

    # The same bucket as the generator's own cap (one generation, through the API).
    assert client.post("/api/v1/generations", json={"prompt": "a cat"}).status_code == 201
    after = client.post("/api/v1/credits/check")
    assert after.json["free_uses_remaining"] == 2
    for _ in range(2):
        client.post("/api/v1/generations", json={"prompt": "a cat"})
    spent = client.post("/api/v1/credits/check").json
    assert (spent["has_credit"], spent["free_uses_remaining"]) == (False, 0)
    assert (spent["reason"], spent["signup_required"]) == ("free_uses_exhausted", True)


def test_an_anonymous_caller_asking_for_a_paid_model_is_told_to_sign_up(client):
    body = client.post("/api/v1/credits/check", json={"model": "hd"}).json
    assert (body["has_credit"], body["reason"]) == (False, "model_not_in_tier")


def test_a_customer_short_of_credits_is_offered_the_pack_that_covers_it(app, client):
    key = make_key(app, make_customer(app, balance=0, tier="basic"))

    body = client.post(
        "/api/v1/credits/check", json={"model": "hd", "count": 30}, headers=bearer(key)
    ).json

    assert (body["has_credit"], body["balance"], body["cost"]) == (False, 0, 60)
    assert (body["reason"], body["purchase_required"], body["plan"]) == (
        "insufficient_credits",
        True,
        "basic",
    )
    assert body["suggested_purchase"] == {
        "kind": "pack",
        "id": "pro",
        "name": "Pro Pack",
        "credits": 100,
        "price": {"amount": 2000, "currency": "usd", "display": "$20.00"},
    }


def test_a_free_customer_with_credit_and_a_model_outside_the_plan(app, client):
    key = make_key(app, make_customer(app))

    ok = client.post("/api/v1/credits/check", json={}, headers=bearer(key)).json
    pro = client.post("/api/v1/credits/check", json={"model": "pro"}, headers=bearer(key)).json

    assert (ok["has_credit"], ok["balance"], ok["free_uses_remaining"]) == (True, 10, 10)
    assert (pro["has_credit"], pro["reason"], pro["purchase_required"]) == (
        False,
        "model_not_in_tier",
        False,
    )
    assert pro["suggested_purchase"]["kind"] == "plan"
    assert pro["suggested_purchase"]["id"] == "premium"
    assert pro["suggested_purchase"]["allowance"] is None
    assert pro["suggested_purchase"]["unlimited"] is True


def test_unlimited_is_null_allowance_and_no_cost(app, client):
    key = make_key(app, make_customer(app, tier="premium"))
    body = client.post("/api/v1/credits/check", json={"model": "pro"}, headers=bearer(key)).json
    assert (body["has_credit"], body["unlimited"], body["cost"]) == (True, True, 0)


def test_bad_input_to_the_check_is_422_naming_the_field(app, client):
    key = make_key(app, make_customer(app))
    for body, field in [
        ({"model": "ultra"}, "model"),
        ({"count": 0}, "count"),
        ({"count": "2"}, "count"),
    ]:
        response = client.post("/api/v1/credits/check", json=body, headers=bearer(key))
        assert assert_error_shape(response, 422, "validation_error")["field"] == field
