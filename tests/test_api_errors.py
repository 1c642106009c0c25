"""The API's one error shape on every error status (issue 11, items 2 and 6).

Like the security sweep, this walks `app.url_map`: every rule under /api, with every
method it takes, is asked as nobody, with a bad key, with a good key and a body that
is not JSON, one that is not an object, an empty one, and the wrong method. Every
answer of 400 or more must be `{"error", "message", "field"?}` as JSON, and between
them the sweep must have seen each status the API documents.
"""

import pytest
from werkzeug.routing import IntegerConverter

from billing_site.extensions import db
from billing_site.models import User
from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.factories import make_customer, make_paid_order

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
EXPECTED_STATUSES = {400, 401, 402, 403, 404, 405, 409, 422, 429}


def api_rules(app):
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")]
    return sorted(rules, key=lambda rule: rule.rule)


def url_for_rule(rule, values: dict) -> str:
    arguments = {
        name: values.get(name, 1 if isinstance(rule._converters[name], IntegerConverter) else "x")
        for name in rule.arguments
    }
    return rule.build(arguments)[1]


@pytest.fixture
def swept_app(make_app):
    # One checkout a minute, so the sweep also meets a 429.
    return make_app(CHECKOUT_RATE_LIMIT="1 per minute", API_KEY_RATE_LIMIT="10000 per minute")


def variants(rule, method: str, key: str):
    """(label, request kwargs) for each way the sweep asks this rule."""
    yield "nobody", {}
    yield "bad key", {"headers": bearer("pf_test_not_a_key")}
    yield "key", {"headers": bearer(key), "json": {}}
    if method in STATE_CHANGING:
        yield "not json", {"headers": bearer(key), "data": "prompt=a", "content_type": "text/plain"}
        yield (
            "broken json",
            {"headers": bearer(key), "data": "{", "content_type": "application/json"},
        )
        yield "json list", {"headers": bearer(key), "json": ["pro"]}
        yield "key again", {"headers": bearer(key), "json": {"pack": "pro", "prompt": "x"}}


def test_every_error_under_api_has_the_one_shape(swept_app):
    app = swept_app
    # A customer with no credits on a plan (402 when generating); the payment is
    # someone else's (404).
    customer_id = make_customer(app, balance=0, tier="basic")
    with app.app_context():
        order_id = make_paid_order(db.session.get(User, make_customer(app))).id
    key = make_key(app, customer_id)
    client = app.test_client()
    values = {"payment_id": order_id, "generation_id": 999999, "key_id": 999999}

    seen, wrong = set(), []
    for rule in api_rules(app):
        url = url_for_rule(rule, values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for label, kwargs in variants(rule, method, key):
                response = client.open(url, method=method, **kwargs)
                seen.add(response.status_code)
                if response.status_code >= 400:
                    try:
                        assert_error_shape(response, response.status_code)
                    except AssertionError as error:
                        wrong.append(f"{method} {url} ({label}): {error}")
                allowed = expected_for(label, rule.endpoint)
                if allowed and response.status_code not in allowed:
                    wrong.append(f"{method} {url} ({label}): {response.status_code}")
            # A method the rule does not take.
            other = "PATCH"
            response = client.open(url, method=other, headers=bearer(key))
            seen.add(response.status_code)
            try:
                assert_error_shape(response, 405)
            except AssertionError as error:
                wrong.append(f"{other} {url}: {error}")
    # A free customer has no plan to cancel.
    free_key = make_key(app, make_customer(app))
    conflict = client.delete("/api/v1/subscription?at_period_end=true", headers=bearer(free_key))
    seen.add(conflict.status_code)
    assert_error_shape(conflict, 409, "no_subscription")
    # A path the API does not have.
    missing = client.get("/api/v1/no-such-thing", headers=bearer(key))
    seen.add(missing.status_code)
    assert_error_shape(missing, 404)

    assert wrong == []
    assert seen >= EXPECTED_STATUSES, f"the sweep never met {EXPECTED_STATUSES - seen}"


def expected_for(label: str, endpoint: str) -> set[int] | None:
    """The statuses a variant must get (refusing the caller or its rate comes before the body)."""
    if label == "bad key" and endpoint.startswith("api."):
        return {401}
    if label == "not json" and endpoint in BODY_ENDPOINTS:
        return {400, 403, 429}
    if label == "json list" and endpoint in BODY_ENDPOINTS:
        return {403, 422, 429}
    return None


# Rules that read a JSON body: a body that is not JSON is 400, one that is not an object 422.
BODY_ENDPOINTS = {
    "api.check",
    "api.create_generation",
    "api.checkout",
    "api.create_key",
    "api.refund_payment",
}
