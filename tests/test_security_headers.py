"""Security headers on every response, cookie flags, CSRF on forms."""

import re

import pytest

from tests.conftest import csrf_token_from


def assert_security_headers(response) -> None:
    csp = response.headers["Content-Security-Policy"]
    directives = dict(
        (part.split(" ", 1) + [""])[:2] for part in (p.strip() for p in csp.split(";")) if part
    )
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


@pytest.mark.parametrize(
    "path", ["/pricing", "/auth/login", "/api/v1/stripe/packages", "/healthz", "/no-such-page"]
)
def test_every_response_carries_the_security_headers(client, path):
    assert_security_headers(client.get(path))


@pytest.mark.parametrize("path", ["/pricing", "/auth/login", "/auth/signup", "/no-such-page"])
def test_pages_need_no_inline_script_or_style(client, path):
    html = client.get(path).get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "the layout loads htmx"
    assert all(" src=" in tag for tag in scripts)
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None
    assert " style=" not in html
    assert "<style" not in html


def session_cookie(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, "the page set no session cookie"
    return cookies[0]


def test_session_cookie_is_httponly_and_samesite_lax(client):
    cookie = session_cookie(client.get("/auth/login"))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development serves plain http on 127.0.0.1


def test_session_cookie_is_secure_in_production(make_app):
    app = make_app(
        APP_ENV="production",
        DATABASE_URL="postgresql://billing@db.internal/billing",
        SECRET_KEY="x",
        STRIPE_SECRET_KEY="sk_test_x",
        STRIPE_WEBHOOK_SECRET="whsec_x",
    )
    response = app.test_client().get("/auth/login")

    assert response.status_code == 200
    cookie = session_cookie(response)
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/auth/login", {"email": "ada@example.com", "password": "whatever1"}),
        ("/auth/signup", {"email": "ada@example.com", "password": "x" * 10}),
        ("/auth/logout", {}),
    ],
)
def test_a_form_posted_without_its_csrf_token_is_refused_plainly(client, db, path, data):
    client.get("/auth/login")  # a session exists, so only the token is missing

    response = client.post(path, data=data)

    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)


def test_a_form_posted_with_a_forged_token_is_refused(client, db):
    csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    data = {"email": "ada@example.com", "password": "whatever1", "csrf_token": "forged"}

    response = client.post("/auth/login", data=data)

    assert response.status_code == 400
    assert "Reload the page and try again" in response.get_data(as_text=True)
