"""The layout, error pages in it, JSON errors under /api/, and never a stack trace."""

import pytest
from flask import abort
from sqlalchemy import select

from billing_site.extensions import db as _db
from billing_site.models import User
from tests.factories import log_in, make_user

FRIENDLY = {
    400: "The request could not be understood",
    403: "You do not have access to this page.",
    404: "We could not find that page.",
    429: "Too many requests.",
    500: "Something went wrong on our side.",
}


@pytest.fixture
def faulty_app(make_app):
    """The app with two extra routes: one aborts with a status, one fails mid-write."""
    app = make_app()

    def abort_with(status: int):
        abort(status)

    def write_then_fail():
        _db.session.add(User(email="half-written@example.com", password_hash="x"))
        _db.session.flush()
        raise RuntimeError("secret internal detail")

    app.add_url_rule("/test/abort/<int:status>", view_func=abort_with)
    app.add_url_rule("/api/test/abort/<int:status>", "api_abort", view_func=abort_with)
    app.add_url_rule("/test/fail", view_func=write_then_fail)
    app.add_url_rule("/api/test/fail", "api_fail", view_func=write_then_fail)
    return app


def test_pricing_page_renders_in_the_layout(client):
    response = client.get("/pricing")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'class="brand" href="/">Pixel Forge</a>' in html  # the brand leads home
    assert "/static/site.css" in html
    assert "/static/htmx.min.js" in html


def test_a_page_with_a_form_carries_the_csrf_token_for_forms_and_htmx(client):
    html = client.get("/auth/login").get_data(as_text=True)
    assert 'name="csrf-token"' in html
    assert 'hx-headers=\'{"X-CSRFToken"' in html


def test_the_stylesheet_and_htmx_are_served_locally(client):
    # Static files are streamed from disk: close the responses.
    with client.get("/static/site.css") as css:
        assert css.status_code == 200
        assert b".card" in css.data
    with client.get("/static/htmx.min.js") as htmx:
        assert htmx.status_code == 200


def test_navigation_for_a_visitor_offers_log_in_and_sign_up(client):
    html = client.get("/pricing").get_data(as_text=True)
    assert 'href="/auth/login">Log in</a>' in html
    assert 'href="/auth/signup">Sign up</a>' in html
    assert "Log out" not in html
    assert 'id="balance-badge"' not in html


def test_navigation_for_a_customer_shows_the_balance_and_log_out(client, db):
    log_in(client, make_user())
    html = client.get("/pricing").get_data(as_text=True)
    assert 'id="balance-badge"' in html
    assert "badge-empty" in html  # a new account has no credits yet
    assert "Log out" in html
    assert "Log in</a>" not in html


def test_unknown_page_is_a_404_in_the_layout(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "We could not find that page." in html
    assert "Pixel Forge</a>" in html
    assert "Back to pricing" in html


def test_unknown_api_route_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json() == {"error": "not_found", "message": "We could not find that page."}


def test_wrong_method_is_a_405(client):
    assert client.delete("/pricing").status_code == 405


@pytest.mark.parametrize("status", sorted(FRIENDLY))
def test_error_pages_are_shown_in_the_layout(faulty_app, status):
    response = faulty_app.test_client().get(f"/test/abort/{status}")
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert FRIENDLY[status] in html
    assert f'<p class="error-status">{status}</p>' in html
    assert 'name="csrf-token"' in html


@pytest.mark.parametrize("status", sorted(FRIENDLY))
def test_api_errors_are_json(faulty_app, status):
    response = faulty_app.test_client().get(f"/api/test/abort/{status}")
    assert response.status_code == status
    assert response.is_json
    assert FRIENDLY[status] in response.get_json()["message"]


def test_a_failure_mid_request_shows_no_traceback_and_writes_nothing(faulty_app):
    client = faulty_app.test_client()
    with faulty_app.app_context():
        # Logged in, so the error page's layout reads (and may commit) the balance.
        log_in(client, make_user("ada@example.com"))

    response = client.get("/test/fail")

    assert response.status_code == 500
    html = response.get_data(as_text=True)
    assert "Something went wrong on our side." in html
    assert "Traceback" not in html
    assert "secret internal detail" not in html
    assert 'id="balance-badge"' in html
    with faulty_app.app_context():
        emails = _db.session.scalars(select(User.email)).all()
    assert emails == ["ada@example.com"]


def test_an_api_failure_is_a_json_500_without_detail(faulty_app):
    response = faulty_app.test_client().get("/api/test/fail")
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_server_error"
    assert "secret internal detail" not in response.get_data(as_text=True)
