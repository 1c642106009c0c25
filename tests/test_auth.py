"""Accounts: sign up, log in, log out, the log-in limits, next=, and create-admin."""

import logging
import re

import pytest
from sqlalchemy import select

from billing_site.auth import services
from billing_site.auth.services import safe_next_url
from billing_site.models import User
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_user, verification_path


def users(db) -> list[User]:
    db.session.expire_all()
    return list(db.session.scalars(select(User)))


def field_error_text(html: str) -> str:
    """Every message shown beside a field, joined."""
    import re

    return " ".join(re.findall(r'<p class="field-error"[^>]*>([^<]*)</p>', html))


# --- signing up ----------------------------------------------------------------------


def test_signup_creates_a_normalised_account_and_asks_to_verify(auth, client, db, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    response = auth.signup(email="  Ada.Lovelace@Example.COM ")

    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    [user] = users(db)
    assert user.email == "ada.lovelace@example.com"
    assert user.password_hash.startswith("scrypt:")
    assert TEST_PASSWORD not in user.password_hash
    assert user.email_verified_at is None
    assert "Log out" not in client.get("/pricing").get_data(as_text=True)
    assert "verification email to=ada.lovelace@example.com" in caplog.text
    assert "/auth/verify/" not in caplog.text  # whoever holds the link can verify

    landing = client.get(verification_path(client))

    assert landing.status_code == 302
    page = client.get(landing.headers["Location"]).get_data(as_text=True)
    assert "Log out" in page
    assert "Your email is verified" in page


def test_signup_goes_to_a_safe_next_page_after_verifying(client, db, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    token = csrf_token_from(client.get("/auth/signup?next=/account").get_data(as_text=True))
    data = {
        "email": "ada@example.com",
        "password": TEST_PASSWORD,
        "password_confirm": TEST_PASSWORD,
        "csrf_token": token,
    }
    client.post("/auth/signup?next=/account", data=data)
    response = client.get(verification_path(client))
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"


def test_signup_with_a_taken_email_answers_as_for_a_new_one_and_tells_the_owner(auth, db, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    make_user("ada@example.com")

    taken = auth.signup(email="ADA@example.com")
    new = auth.signup(email="grace@example.com")

    assert taken.status_code == new.status_code == 200

    def page(response) -> str:
        # Only the address (and the per-render CSRF token) may differ.
        html = response.get_data(as_text=True).replace("ada@", "grace@")
        return re.sub(r"[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}", "", html)

    assert page(taken) == page(new)
    assert len(users(db)) == 2
    notices = [r.getMessage() for r in caplog.records if "sign-up attempt" in r.getMessage()]
    assert notices == [f"sign-up attempt notice to=ada@example.com user={users(db)[0].id}"]


def test_signup_race_on_one_email_is_caught_by_the_unique_constraint(auth, db, monkeypatch):
    make_user("ada@example.com")
    # The other sign-up commits between our check and our insert.
    monkeypatch.setattr(services, "find_user_by_email", lambda email: None)
    monkeypatch.setattr(services, "find_lookalike", lambda email: None)

    response = auth.signup(email="ada@example.com")

    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    assert len(users(db)) == 1


@pytest.mark.parametrize(
    ("email", "password", "confirm", "message"),
    [
        ("not-an-email", TEST_PASSWORD, TEST_PASSWORD, "@-sign"),
        ("", TEST_PASSWORD, TEST_PASSWORD, "Enter your email address."),
        ("ada@example.com", "short", "short", "Use at least 8 characters."),
        ("ada@example.com", TEST_PASSWORD, "something else", "The two passwords do not match."),
    ],
)
def test_signup_shows_validation_errors_beside_the_fields(
    client, db, email, password, confirm, message
):
    token = csrf_token_from(client.get("/auth/signup").get_data(as_text=True))
    data = {"email": email, "password": password, "password_confirm": confirm, "csrf_token": token}

    response = client.post("/auth/signup", data=data)

    assert response.status_code == 422
    assert message in field_error_text(response.get_data(as_text=True))
    assert users(db) == []


# --- logging in and out --------------------------------------------------------------


def test_login_with_the_right_password_lands_on_pricing_logged_in(auth, client, db):
    make_user("ada@example.com")

    response = auth.login(email="Ada@Example.com")

    assert response.status_code == 302
    assert response.headers["Location"] == "/pricing"
    assert "Log out" in client.get("/pricing").get_data(as_text=True)


@pytest.mark.parametrize("email", ["ada@example.com", "nobody@example.com"])
def test_login_with_a_wrong_password_or_unknown_email_gets_one_message(auth, client, db, email):
    make_user("ada@example.com")

    response = auth.login(email=email, password="wrong password")

    assert response.status_code == 422
    assert "do not match an account" in field_error_text(response.get_data(as_text=True))
    assert "Log out" not in client.get("/pricing").get_data(as_text=True)


def test_login_follows_next_inside_the_site(auth, db):
    make_user("ada@example.com")
    response = auth.login(next_url="/account?tab=usage")
    assert response.headers["Location"] == "/account?tab=usage"


@pytest.mark.parametrize(
    "next_url",
    ["//evil.example", "/\\evil.example", "https://evil.example/", "javascript:alert(1)"],
)
def test_login_never_follows_next_off_the_site(auth, db, next_url):
    make_user("ada@example.com")
    response = auth.login(next_url=next_url)
    assert response.status_code == 302
    assert response.headers["Location"] == "/pricing"


def test_login_page_for_a_protected_page_keeps_next_in_the_form(client, db):
    page = client.get("/auth/login?next=/account").get_data(as_text=True)
    assert 'action="/auth/login?next=/account"' in page
    offsite = client.get("/auth/login?next=//evil.example").get_data(as_text=True)
    assert "evil.example" not in offsite


def test_logout_logs_out(auth, client, db):
    make_user("ada@example.com")
    auth.login()

    response = auth.logout()

    assert response.status_code == 302
    page = client.get("/pricing").get_data(as_text=True)
    assert "Log in" in page
    assert "Log out" not in page


def test_logout_is_a_post_with_a_csrf_token(auth, client, db):
    make_user("ada@example.com")
    auth.login()

    assert client.get("/auth/logout").status_code == 405
    refused = client.post("/auth/logout")
    assert refused.status_code == 400
    assert "Log out" in client.get("/pricing").get_data(as_text=True)


# --- the log-in limits ---------------------------------------------------------------


def failed_login(client, token: str, email: str = "ada@example.com"):
    data = {"email": email, "password": "wrong password", "csrf_token": token}
    return client.post("/auth/login", data=data)


def test_the_eleventh_failed_login_in_a_minute_is_refused(client, db):
    make_user("ada@example.com")
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    statuses = [failed_login(client, token).status_code for _ in range(10)]
    refused = failed_login(client, token)

    assert statuses == [422] * 10
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many requests" in refused.get_data(as_text=True)


def test_the_account_limit_refuses_failing_clients_but_lets_the_owner_in(app):
    # Not the db fixture: its app context (and so flask.g, where Flask-WTF keeps
    # the CSRF token) would be shared by the several clients below.
    with app.app_context():
        make_user("ada@example.com")

    def client_at(number: int):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.0.0.{number}"
        return client, csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    attackers = [client_at(n) for n in range(1, 11)]
    # The same account, spelt differently, from ten different addresses.
    statuses = [
        failed_login(c, t, email="ADA@example.com" if n % 2 else "ada@example.com").status_code
        for n, (c, t) in enumerate(attackers)
    ]
    assert statuses == [422] * 10
    # Past the account's limit a client that already failed on it is refused...
    refused = failed_login(*attackers[0])
    assert refused.status_code == 429
    assert "Too many wrong passwords for this account" in refused.get_data(as_text=True)
    # ...while the owner, from a client that never failed, still gets in.
    owner, token = client_at(50)
    data = {"email": "ada@example.com", "password": TEST_PASSWORD, "csrf_token": token}
    assert owner.post("/auth/login", data=data).status_code == 302
    other_client, token = client_at(99)
    assert failed_login(other_client, token, email="grace@example.com").status_code == 422


def test_the_account_hard_ceiling_holds_for_every_client(make_app):
    app = make_app(LOGIN_ACCOUNT_FAILURE_LIMIT="2 per minute", LOGIN_ACCOUNT_HARD_LIMIT="3 per day")
    with app.app_context():
        make_user("ada@example.com")
    for number in range(3):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.0.1.{number}"
        token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
        assert failed_login(client, token).status_code == 422
    owner = app.test_client()
    owner.environ_base["REMOTE_ADDR"] = "10.0.1.200"
    token = csrf_token_from(owner.get("/auth/login").get_data(as_text=True))
    data = {"email": "ada@example.com", "password": TEST_PASSWORD, "csrf_token": token}
    assert owner.post("/auth/login", data=data).status_code == 429


def test_rotating_the_fingerprint_header_does_not_lift_the_login_limit(client, db):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    statuses = []
    for number in range(12):
        data = {"email": f"u{number}@example.com", "password": "wrong", "csrf_token": token}
        headers = {"X-Client-Fingerprint": f"random-{number}"}
        statuses.append(client.post("/auth/login", data=data, headers=headers).status_code)
    assert statuses == [422] * 10 + [429, 429]


def test_the_limit_follows_the_client_across_accounts(client, db):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    statuses = [failed_login(client, token, f"user{n}@example.com").status_code for n in range(10)]

    assert statuses == [422] * 10
    assert failed_login(client, token, "someone-new@example.com").status_code == 429


def test_reading_the_login_form_does_not_count(client, db):
    assert {client.get("/auth/login").status_code for _ in range(15)} == {200}


def test_the_login_limit_is_configurable(make_app):
    client = make_app(LOGIN_RATE_LIMIT="2 per minute").test_client()
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    statuses = [failed_login(client, token).status_code for _ in range(3)]

    assert statuses == [422, 422, 429]


# --- next= ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["/", "/account", "/account?tab=usage#top", "/pricing?x=//y"])
def test_safe_next_url_keeps_paths_on_the_site(value):
    assert safe_next_url(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "evil.example/path",
        "/\t/evil.example",
        "/ /evil.example",
        "/account\n",
    ],
)
def test_safe_next_url_refuses_anything_that_could_leave_the_site(value):
    assert safe_next_url(value) is None


# --- create-admin --------------------------------------------------------------------


def test_create_admin_creates_an_admin_who_can_log_in(runner, auth, db):
    result = runner.invoke(args=["create-admin", "Root@Example.com", "--password", TEST_PASSWORD])

    assert result.exit_code == 0, result.output
    assert "Created admin root@example.com" in result.output
    [user] = users(db)
    assert user.is_admin
    assert auth.login(email="root@example.com").status_code == 302


def test_create_admin_promotes_an_existing_user_and_resets_the_password(runner, auth, db):
    make_user("ada@example.com")

    result = runner.invoke(args=["create-admin", "ada@example.com", "--password", "a new password"])

    assert result.exit_code == 0, result.output
    assert "Promoted admin ada@example.com" in result.output
    [user] = users(db)
    assert user.is_admin
    assert auth.login(password="a new password").status_code == 302


def test_create_admin_promotes_without_touching_the_password(runner, auth, db):
    make_user("ada@example.com")

    result = runner.invoke(args=["create-admin", "ada@example.com"])

    assert result.exit_code == 0, result.output
    assert users(db)[0].is_admin
    assert auth.login().status_code == 302


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-admin", "new@example.com"], "needs a password"),
        (["create-admin", "not-an-email", "--password", TEST_PASSWORD], "@-sign"),
        (["create-admin", "new@example.com", "--password", "short"], "at least 8"),
    ],
)
def test_create_admin_refuses_what_it_cannot_do(runner, db, args, message):
    result = runner.invoke(args=args)

    assert result.exit_code != 0
    assert message in result.output
    assert users(db) == []
