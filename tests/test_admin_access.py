"""Admin authorization (TESTING.md row 32): every admin route, for a visitor, a customer
and an admin; and no admin form works without its CSRF token."""

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from billing_site.extensions import db
from billing_site.models import Refund, StripeEvent
from tests.admin_actions import inside, log_in_as
from tests.conftest import csrf_token_from
from tests.factories import make_paid_order, make_user


@pytest.fixture
def world(app):
    """One of everything an admin URL can name, and a client per kind of person."""
    with inside(app):
        customer = make_user("customer@example.com")
        admin = make_user("admin@example.com", is_admin=True)
        order = make_paid_order(customer)
        refund = Refund(order_id=order.id, sequence=1, amount_cents=100, status="failed")
        event = StripeEvent(
            id="evt_access_1",
            type="charge.refunded",
            created=datetime.now(UTC),
            payload={"id": "evt_access_1", "type": "charge.refunded"},
            status="processed",
        )
        db.session.add_all([refund, event])
        db.session.commit()
        values = {
            "order_id": order.id,
            "user_id": customer.id,
            "refund_id": refund.id,
            "event_id": event.id,
        }
        ids = {"customer": customer.id, "admin": admin.id}
    return values, ids


def admin_routes(app):
    """(method, url) for every rule of the admin blueprint, with real ids filled in."""
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("admin.")]
    assert len(rules) >= 14  # the console is all there
    return rules


def url_for_rule(app, rule, values) -> str:
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **{name: values[name] for name in rule.arguments})


def method_of(rule) -> str:
    return "POST" if "POST" in rule.methods else "GET"


def request(client, method: str, url: str, *, with_csrf: bool = True):
    if method == "GET":
        # Buffered, as a server reads a streamed answer (the orders CSV) to its end.
        return client.get(url, buffered=True)
    data = {}
    if with_csrf:
        # The token from a page this client itself loaded (it is tied to its session).
        data["csrf_token"] = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(url, data=data)


def test_a_visitor_is_sent_to_log_in_from_every_admin_route(app, world):
    values, _ = world
    visitor = app.test_client()
    for rule in admin_routes(app):
        url = url_for_rule(app, rule, values)
        response = request(visitor, method_of(rule), url)
        assert response.status_code == 302, (rule.rule, response.status_code)
        location = urlsplit(response.headers["Location"])
        assert location.path == "/auth/login", rule.rule
        assert parse_qs(location.query)["next"] == [url], rule.rule


def test_a_customer_gets_403_from_every_admin_route(app, world):
    values, ids = world
    customer = app.test_client()
    log_in_as(customer, ids["customer"])
    for rule in admin_routes(app):
        response = request(customer, method_of(rule), url_for_rule(app, rule, values))
        assert response.status_code == 403, rule.rule
        assert "You do not have access to this page." in response.get_data(as_text=True)


def test_an_admin_reaches_every_admin_route(app, world):
    values, ids = world
    admin = app.test_client()
    log_in_as(admin, ids["admin"])
    for rule in admin_routes(app):
        response = request(admin, method_of(rule), url_for_rule(app, rule, values))
        assert response.status_code not in (401, 403), rule.rule
        assert response.status_code < 500, rule.rule
        if response.status_code == 302:
            assert not response.headers["Location"].startswith("/auth/login"), rule.rule


def test_every_admin_form_refuses_a_post_without_its_csrf_token(app, world):
    values, ids = world
    admin = app.test_client()
    log_in_as(admin, ids["admin"])
    posts = [rule for rule in admin_routes(app) if method_of(rule) == "POST"]
    assert len(posts) >= 5
    for rule in posts:
        url = url_for_rule(app, rule, values)
        response = request(admin, "POST", url, with_csrf=False)
        assert response.status_code == 400, rule.rule
        assert "did not come from this site" in response.get_data(as_text=True)


def test_the_admin_link_shows_only_for_admins(app, world):
    _, ids = world
    admin, customer = app.test_client(), app.test_client()
    log_in_as(admin, ids["admin"])
    log_in_as(customer, ids["customer"])
    assert 'href="/admin/"' in admin.get("/admin/orders").get_data(as_text=True)
    assert 'href="/admin/"' not in customer.get("/pricing").get_data(as_text=True)
