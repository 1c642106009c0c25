"""Forgot your password: a signed link by email that works once, for an hour.

Everything goes through the real forms and the notifications outbox, as a person
would: ask on the log-in page, open the email's link, choose a new password.
"""

import contextlib
import re
import time
from datetime import timedelta

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from billing_site.extensions import db as _db
from billing_site.models import AuditLog, OutboundEmail, User
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_user

NEW_PASSWORD = "a brand new passphrase 42"
ANSWER = "If an account exists for"


def outbox(kind: str = "password_reset") -> list[OutboundEmail]:
    _db.session.expire_all()
    statement = select(OutboundEmail).where(OutboundEmail.kind == kind)
    return list(_db.session.execute(statement.order_by(OutboundEmail.id)).scalars())


def link_in(email: OutboundEmail) -> str:
    """The path of the reset link the email carries (its text part, as a reader sees it)."""
    return re.search(r"http://localhost(/auth/reset/\S+)", email.text_body).group(1)


def field_errors(html: str) -> str:
    return " ".join(re.findall(r'<p class="field-error"[^>]*>([^<]*)</p>', html))


def fresh_user(email: str = "ada@example.com") -> User:
    _db.session.expire_all()
    return _db.session.execute(select(User).where(User.email == email)).scalar_one()


def ask_for_link(client, email: str = "ada@example.com"):
    token = csrf_token_from(client.get("/auth/reset").get_data(as_text=True))
    return client.post("/auth/reset", data={"email": email, "csrf_token": token})


def choose_password(client, path: str, password: str = NEW_PASSWORD, confirm: str | None = None):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    data = {"password": password, "password_confirm": confirm or password, "csrf_token": token}
    return client.post(path, data=data)


@contextlib.contextmanager
def signed_ago(monkeypatch, delta: timedelta):
    """Links signed inside the block carry a timestamp `delta` ago (the serializer's clock)."""
    monkeypatch.setattr(
        TimestampSigner, "get_timestamp", lambda self: int(time.time() - delta.total_seconds())
    )
    yield
    monkeypatch.undo()


# --- asking for a link -------------------------------------------------------------------


def test_the_login_page_links_to_forgot_your_password(client, db):
    page = client.get("/auth/login").get_data(as_text=True)
    assert 'href="/auth/reset">Forgot your password?</a>' in page
    form = client.get("/auth/reset")
    assert form.status_code == 200
    assert 'name="email"' in form.get_data(as_text=True)


def test_asking_for_a_link_emails_one_through_the_outbox(client, db):
    make_user("ada@example.com")

    response = ask_for_link(client, " Ada@Example.com ")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert ANSWER in page and "ada@example.com" in page
    [email] = outbox()
    assert email.to_address == "ada@example.com"
    assert email.subject == "Reset your Pixel Forge password"
    assert "works once, for 1 hour" in email.text_body
    assert f'href="http://localhost{link_in(email)}"' in email.html_body


def test_an_unknown_address_gets_the_same_answer_and_no_email(client, db):
    make_user("ada@example.com")
    known = ask_for_link(client, "ada@example.com")
    unknown = ask_for_link(client, "nobody@example.com")

    def page(response) -> str:
        # Only the address (and the per-render CSRF token) may differ.
        html = response.get_data(as_text=True).replace("nobody@", "ada@")
        return re.sub(r"[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}", "", html)

    assert known.status_code == unknown.status_code == 200
    assert page(known) == page(unknown)
    assert [email.to_address for email in outbox()] == ["ada@example.com"]
    assert _db.session.query(User).count() == 1  # nobody was signed up by asking


def test_a_malformed_address_is_refused_beside_the_field(client, db):
    response = ask_for_link(client, "not-an-email")
    assert response.status_code == 422
    assert "@-sign" in field_errors(response.get_data(as_text=True))
    assert outbox() == []


def test_the_link_is_on_the_page_only_in_development(make_app):
    for env, shown in (("development", True), ("test", False)):
        app = make_app(APP_ENV=env, SESSION_COOKIE_SECURE=False)
        with app.app_context():
            make_user(f"{env}@example.com")
        page = ask_for_link(app.test_client(), f"{env}@example.com").get_data(as_text=True)
        assert ANSWER in page
        assert ("/auth/reset/" in page) is shown, env


# --- the link ----------------------------------------------------------------------------


def test_the_link_sets_a_new_password_once_and_logs_the_person_in(app, client, db):
    make_user("ada@example.com", email_verified_at=None)
    ask_for_link(client)
    [email] = outbox()
    path = link_in(email)

    form = client.get(path)
    assert form.status_code == 200
    assert 'name="password_confirm"' in form.get_data(as_text=True)
    response = choose_password(client, path)

    assert response.status_code == 302
    assert response.headers["Location"] == "/account"
    page = client.get("/account").get_data(as_text=True)
    assert "Your password is changed" in page
    assert "Verify your email" not in page  # following the link proved the address
    assert fresh_user().email_verified
    [entry] = _db.session.execute(select(AuditLog)).scalars()
    assert (entry.action, entry.admin_id) == ("password.reset", fresh_user().id)
    # The new password logs in; the old one no longer does.
    elsewhere = app.test_client()
    assert log_in_with(elsewhere, NEW_PASSWORD).status_code == 302
    assert log_in_with(app.test_client(), TEST_PASSWORD).status_code == 422

    again = app.test_client().get(path)
    assert again.status_code == 410
    assert "already been used" in again.get_data(as_text=True)
    assert 'href="/auth/reset"' in again.get_data(as_text=True)  # a way to ask again
    reused = choose_password(app.test_client(), path, "another fine passphrase 7")
    assert reused.status_code == 410
    assert log_in_with(app.test_client(), NEW_PASSWORD).status_code == 302


def log_in_with(client, password: str, email: str = "ada@example.com"):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    data = {"email": email, "password": password, "csrf_token": token}
    return client.post("/auth/login", data=data)


def test_resetting_ends_every_other_session(app, client, db):
    make_user("ada@example.com")
    other_device = app.test_client()
    log_in_with(other_device, TEST_PASSWORD)
    copied = app.test_client()
    copied.set_cookie("session", other_device.get_cookie("session").value)
    assert copied.get("/account").status_code == 200

    ask_for_link(client)
    choose_password(client, link_in(outbox()[0]))

    for stale in (other_device, copied):
        page = stale.get("/account")
        assert page.status_code == 302
        assert page.headers["Location"].startswith("/auth/login")
    assert client.get("/account").status_code == 200  # the person who reset goes on


@pytest.mark.parametrize(
    ("age", "works"), [(timedelta(minutes=59), True), (timedelta(minutes=61), False)]
)
def test_the_link_expires_after_an_hour(client, db, monkeypatch, age, works):
    make_user("ada@example.com")
    with signed_ago(monkeypatch, age):
        ask_for_link(client)
    path = link_in(outbox()[0])

    response = choose_password(client, path)

    if works:
        assert response.status_code == 302
    else:
        assert response.status_code == 410
        page = response.get_data(as_text=True)
        assert "This password-reset link has expired." in page
        assert "Send me a new link" in page
        assert client.get(path).status_code == 410
        assert log_in_with(client, TEST_PASSWORD).status_code == 302  # nothing changed


def test_the_link_lifetime_is_configurable(make_app, monkeypatch):
    app = make_app(PASSWORD_RESET_MAX_AGE_MINUTES=5)
    client = app.test_client()
    with app.app_context():
        make_user("ada@example.com")
        with signed_ago(monkeypatch, timedelta(minutes=6)):
            ask_for_link(client)
        [email] = outbox()
        assert "works once, for 5 minutes" in email.text_body
        assert client.get(link_in(email)).status_code == 410


def test_a_newer_password_ends_an_older_link(client, db, monkeypatch):
    make_user("ada@example.com")
    with signed_ago(monkeypatch, timedelta(minutes=10)):
        ask_for_link(client)
    ask_for_link(client)
    older, newer = (link_in(email) for email in outbox())

    assert choose_password(client, newer).status_code == 302
    assert client.get(older).status_code == 410


def test_changing_the_password_on_the_account_page_ends_the_link(auth, client, db):
    make_user("ada@example.com")
    ask_for_link(client)
    auth.login()
    token = csrf_token_from(client.get("/auth/password").get_data(as_text=True))
    data = {"current_password": TEST_PASSWORD, "csrf_token": token}
    data.update(password=NEW_PASSWORD, password_confirm=NEW_PASSWORD)
    assert client.post("/auth/password", data=data).status_code == 302

    response = client.get(link_in(outbox()[0]))

    assert response.status_code == 410
    assert "already been used" in response.get_data(as_text=True)


def test_a_tampered_or_made_up_link_is_refused_without_a_stack_trace(client, db):
    make_user("ada@example.com")
    ask_for_link(client)
    path = link_in(outbox()[0])

    for bad in (path[:-3] + "abc", "/auth/reset/not-a-token"):
        response = client.get(bad)
        assert response.status_code == 400
        assert "This password-reset link is not valid." in response.get_data(as_text=True)
        assert choose_password(client, bad).status_code == 400


def test_a_verification_link_is_no_reset_link(auth, client, db):
    auth.signup("ada@example.com")
    [verification] = outbox("verify_email")
    token = re.search(r"/auth/verify/(\S+)", verification.text_body).group(1)
    assert client.get(f"/auth/reset/{token}").status_code == 400


@pytest.mark.parametrize(
    ("password", "confirm", "message"),
    [
        ("password", None, "Choose a stronger password"),
        ("12345678", None, "Choose a stronger password"),
        ("ada@example.com", None, "Do not use your email address"),
        (NEW_PASSWORD, "something else", "The two passwords do not match."),
    ],
)
def test_a_weak_password_is_refused_with_the_reason(client, db, password, confirm, message):
    make_user("ada@example.com")
    ask_for_link(client)
    path = link_in(outbox()[0])

    response = choose_password(client, path, password, confirm)

    assert response.status_code == 422
    assert message in field_errors(response.get_data(as_text=True))
    assert log_in_with(client, TEST_PASSWORD).status_code == 302  # the old password stands
    assert choose_password(client, path).status_code == 302  # and the link still works


# --- limits ------------------------------------------------------------------------------


def test_asking_is_limited_per_client_address(client, db):
    statuses = []
    for number in range(6):
        client.environ_base["HTTP_X_CLIENT_FINGERPRINT"] = f"fp-{number}"
        statuses.append(ask_for_link(client, f"someone{number}@example.com").status_code)
    assert statuses == [200] * 5 + [429]


def test_asking_is_limited_per_email_address_from_any_client(app):
    with app.app_context():
        make_user("ada@example.com")

    def ask_from(number: int, spelling: str):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.0.2.{number}"
        return ask_for_link(client, spelling)

    spellings = ["ada@example.com", "ADA@example.com", " Ada@example.com"]
    allowed = [ask_from(number, spelling) for number, spelling in enumerate(spellings)]
    with app.app_context():
        emails_sent = len(outbox())
        refused = ask_from(9, "Ada@Example.com")

        assert [response.status_code for response in allowed] == [200] * 3
        assert refused.status_code == 429
        assert "Too many requests" in refused.get_data(as_text=True)
        assert int(refused.headers["Retry-After"]) > 0
        assert len(outbox()) == emails_sent  # the inbox is not flooded


def test_the_request_logs_no_link_and_without_a_mail_server_keeps_the_message(client, db, caplog):
    make_user("ada@example.com")
    with caplog.at_level("INFO"):
        ask_for_link(client, "ada@example.com")

    [email] = outbox()
    assert email.status == "stored"  # no mail server here: kept for /dev/mail, never sent
    assert "/auth/reset/" not in caplog.text  # the link is a key to the account
    assert "/auth/reset/" in email.text_body
