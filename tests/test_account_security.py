"""Accounts under attack (issue 12, items 3, 4, 9, 10, 17; issue 13 item 1; TESTING row 49).

Sessions end on the server, sign-ups are throttled and earn credits only once
the address is verified, look-alike addresses and weak passwords are refused.
"""

import contextlib
import logging
import re
import time
from datetime import timedelta

import pytest
from itsdangerous.timed import TimestampSigner

from billing_site.models import User
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_user, verification_path


def badge_number(html: str) -> int:
    return int(re.search(r'class="badge-number">(-?\d+)<', html).group(1))


@contextlib.contextmanager
def signed_ago(monkeypatch, delta: timedelta):
    """Sessions and links signed inside the block carry a timestamp `delta` ago."""
    monkeypatch.setattr(
        TimestampSigner, "get_timestamp", lambda self: int(time.time() - delta.total_seconds())
    )
    yield
    monkeypatch.undo()


def fresh_user(db, email: str) -> User:
    db.session.expire_all()
    return db.session.query(User).filter_by(email=email).one()


# --- sessions end on the server (row 49) ----------------------------------------


def test_a_copied_session_cookie_is_logged_out_with_its_owner(app, auth, client, db):
    make_user("ada@example.com")
    auth.login()
    copied = app.test_client()
    copied.set_cookie("session", client.get_cookie("session").value)
    assert "Log out" in copied.get("/pricing").get_data(as_text=True)

    auth.logout()

    page = copied.get("/account")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/auth/login")


def test_changing_the_password_ends_other_sessions_but_not_this_one(app, auth, client, db):
    make_user("ada@example.com")
    auth.login()
    other_device = app.test_client()
    AuthOn(other_device).login()
    new_password = "a brand new passphrase 42"
    token = csrf_token_from(client.get("/auth/password").get_data(as_text=True))
    data = {
        "current_password": TEST_PASSWORD,
        "password": new_password,
        "password_confirm": new_password,
        "csrf_token": token,
    }

    response = client.post("/auth/password", data=data)

    assert response.status_code == 302
    assert client.get("/account").status_code == 200
    assert other_device.get("/account").status_code == 302
    assert AuthOn(app.test_client()).login(password=new_password).status_code == 302


def test_the_password_page_refuses_a_wrong_current_password_and_a_weak_new_one(auth, client, db):
    make_user("ada@example.com")
    auth.login()
    token = csrf_token_from(client.get("/auth/password").get_data(as_text=True))
    wrong = {"current_password": "nope", "password": "a brand new passphrase 42"}
    wrong["password_confirm"] = wrong["password"]
    response = client.post("/auth/password", data={**wrong, "csrf_token": token})
    assert response.status_code == 422
    assert "not your current password" in response.get_data(as_text=True)
    weak = {
        "current_password": TEST_PASSWORD,
        "password": "password",
        "password_confirm": "password",
    }
    response = client.post("/auth/password", data={**weak, "csrf_token": token})
    assert response.status_code == 422
    assert "stronger password" in response.get_data(as_text=True)


def test_log_out_everywhere_else_keeps_only_this_session(app, auth, client, db):
    make_user("ada@example.com")
    auth.login()
    other_device = app.test_client()
    AuthOn(other_device).login()
    token = csrf_token_from(client.get("/auth/password").get_data(as_text=True))

    assert client.post("/auth/sessions/end", data={"csrf_token": token}).status_code == 302

    assert client.get("/account").status_code == 200
    assert other_device.get("/account").status_code == 302


def test_the_csrf_token_changes_at_log_in(auth, client, db):
    make_user("ada@example.com")
    before = auth.csrf_token()
    auth.login()
    after = auth.csrf_token("/pricing")
    assert before != after
    # The token a visitor saw before logging in no longer works for the account.
    assert client.post("/auth/logout", data={"csrf_token": before}).status_code == 400


def test_a_session_older_than_its_lifetime_is_refused(auth, client, db, app, monkeypatch):
    assert app.permanent_session_lifetime == timedelta(days=7)
    make_user("ada@example.com")
    with signed_ago(monkeypatch, timedelta(days=7, minutes=1)):
        auth.login()
    assert client.get("/account").status_code == 302


class AuthOn:
    """The AuthActions of conftest, on another client."""

    def __init__(self, client):
        self.client = client

    def login(self, email="ada@example.com", password=TEST_PASSWORD):
        token = csrf_token_from(self.client.get("/auth/login").get_data(as_text=True))
        data = {"email": email, "password": password, "csrf_token": token}
        return self.client.post("/auth/login", data=data)


# --- sign-up: throttled, verified, credits on the first page ------------------------


def test_signup_is_limited_per_address_whatever_the_fingerprint(auth, client, db):
    statuses = []
    for number in range(7):
        client.environ_base["HTTP_X_CLIENT_FINGERPRINT"] = f"fp-{number}"
        statuses.append(auth.signup(email=f"farm{number}@example.com").status_code)
    assert statuses == [200] * 5 + [429, 429]


def test_free_credits_wait_for_verification_and_show_on_the_first_page(auth, client, db, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    auth.signup(email="ada@example.com")
    user = fresh_user(db, "ada@example.com")
    assert user.balance == 0
    # Logged in before verifying: no credits yet, and the page says why.
    auth.login()
    page = client.get("/account").get_data(as_text=True)
    assert "Verify your email to get your 10 free credits" in page
    assert fresh_user(db, "ada@example.com").balance == 0

    landing = client.get(verification_path(client))

    first_page = client.get(landing.headers["Location"]).get_data(as_text=True)
    assert badge_number(first_page) == 10
    assert "badge-empty" not in first_page
    assert fresh_user(db, "ada@example.com").balance == 10
    assert "Verify your email" not in client.get("/account").get_data(as_text=True)


def test_the_link_is_used_once_and_expires(auth, app, client, db, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    with signed_ago(monkeypatch, timedelta(hours=49)):
        auth.signup(email="ada@example.com")
    expired = client.get(verification_path(client))
    assert expired.status_code == 400
    assert "expired or is not valid" in expired.get_data(as_text=True)
    assert fresh_user(db, "ada@example.com").email_verified_at is None
    client.post("/auth/signup")  # nothing: a new link comes from logging in
    auth.login()
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    client.post("/auth/verify/resend", data={"csrf_token": token})
    path = verification_path(client)
    assert client.get(path).status_code == 302
    assert fresh_user(db, "ada@example.com").balance == 10
    # A second use does not log anyone in.
    visitor = app.test_client()
    assert visitor.get(path).headers["Location"] == "/auth/login"
    assert fresh_user(db, "ada@example.com").balance == 10
    assert client.get("/auth/verify/not-a-token").status_code == 400


def test_the_link_is_on_the_page_only_in_development(make_app):
    for env, shown in (("development", True), ("test", False)):
        app = make_app(APP_ENV=env, SESSION_COOKIE_SECURE=False)
        client = app.test_client()
        token = csrf_token_from(client.get("/auth/signup").get_data(as_text=True))
        data = {
            "email": f"{env}@example.com",
            "password": TEST_PASSWORD,
            "password_confirm": TEST_PASSWORD,
            "csrf_token": token,
        }
        page = client.post("/auth/signup", data=data).get_data(as_text=True)
        assert ("/auth/verify/" in page) is shown, env


def test_without_required_verification_sign_up_grants_and_logs_in(make_app):
    client = make_app(REQUIRE_EMAIL_VERIFICATION=False).test_client()
    token = csrf_token_from(client.get("/auth/signup").get_data(as_text=True))
    data = {"email": "ada@example.com", "password": TEST_PASSWORD}
    data.update(password_confirm=TEST_PASSWORD, csrf_token=token)
    response = client.post("/auth/signup", data=data)
    assert response.status_code == 302
    assert badge_number(client.get(response.headers["Location"]).get_data(as_text=True)) == 10


# --- look-alike emails and weak passwords -----------------------------------------


@pytest.mark.parametrize(
    "lookalike", ["\uff41dmin@example.com", "\u0430dmin@example.com", "ADM\u0130N@example.com"]
)
def test_a_lookalike_of_an_existing_address_is_refused(auth, db, lookalike):
    make_user("admin@example.com")
    response = auth.signup(email=lookalike)
    assert response.status_code in (200, 422)
    assert db.session.query(User).count() == 1
    if response.status_code == 422:
        assert "looks like one that already has an account" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (" " * 8, "besides spaces"),
        ("12345678", "stronger password"),
        ("password", "stronger password"),
        ("ada@example.com", "email address"),
    ],
)
def test_weak_passwords_are_refused_beside_the_field(auth, db, password, message):
    response = auth.signup(email="ada@example.com", password=password)
    assert response.status_code == 422
    errors = " ".join(re.findall(r'<p class="field-error"[^>]*>([^<]*)</p>', response.text))
    assert message in errors
    assert db.session.query(User).count() == 0
