"""Fixtures: real PostgreSQL and Redis, the app, its client, a live server, Chromium.

On a developer's laptop a part that is not installed is skipped with the reason;
with CI=true it is a failure, so CI can never go green by skipping.
"""

import contextlib
import contextvars
import os
import re
import shutil
import threading

import flask_migrate
import pytest
from flask import has_app_context
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.serving import make_server

from billing_site import create_app
from billing_site.extensions import db as _db
from billing_site.extensions import limiter
from tests import servers

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
TEST_WEBHOOK_SECRET = "whsec_test_secret"
TEST_PASSWORD = "correct horse battery staple"


def unavailable(reason: str):
    """Skip on a laptop without the part; fail under CI, where it must be there."""
    if IN_CI:
        pytest.fail(f"{reason}, and CI=true requires it", pytrace=False)
    pytest.skip(reason)


# --- real servers ----------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    try:
        server = servers.start_postgres()
    except servers.ServerUnavailable as error:
        unavailable(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    try:
        server = servers.start_redis()
    except servers.ServerUnavailable as error:
        unavailable(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres):
    """The PostgreSQL URL, with the schema built by the migrations themselves."""
    app = create_app(base_config(postgres.url, "memory://"))
    with app.app_context():
        flask_migrate.upgrade()
        _db.engine.dispose()
    return postgres.url


def base_config(database_url: str, storage_uri: str) -> dict:
    return {
        "TESTING": True,
        "APP_ENV": "test",
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "pool_size": 20, "max_overflow": 80},
        "RATELIMIT_STORAGE_URI": storage_uri,
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "SITE_URL": "http://localhost",
        # Prefixes every idempotency key sent to Stripe ("test-checkout-order-12").
        "INSTALLATION_ID": "test",
    }


# --- the app -----------------------------------------------------------------------


class SeparateContextClient(FlaskClient):
    """A test client whose every request gets its own app context.

    Flask reuses an app context that is already pushed (the `db` fixture's), so
    without this a request would share the test's database session and `g`
    (the cached logged-in user, the CSRF token) with the test body and with
    other clients. Each request runs in an empty contextvars context instead,
    like a real request; afterwards the test's own session is expired so the
    test re-reads what the request committed, as a separate reader would.
    """

    def open(self, *args, **kwargs):
        response = contextvars.Context().run(super().open, *args, **kwargs)
        if has_app_context():
            _db.session.expire_all()
        return response


@pytest.fixture
def make_app(database_url, redis_server, tmp_path):
    """Build an app on the test PostgreSQL and Redis, with overrides on top.

    After the test every table is emptied and Redis flushed, so tests are
    independent however they committed. The local Stripe stand-in keeps its
    state in the test's own tmp_path.
    """
    apps = []
    local_stripe = {"LOCAL_STRIPE_STATE_FILE": str(tmp_path / "local_stripe.json")}

    def factory(**overrides):
        config = {**base_config(database_url, redis_server.url), **local_stripe, **overrides}
        app = create_app(config)
        app.test_client_class = SeparateContextClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            _db.session.remove()
            _db.engine.dispose()
    _empty_database(database_url)
    _flush_redis(redis_server.url)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def db(app):
    """The database inside an app context, for arranging and asserting rows."""
    with app.app_context():
        yield _db
        _db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def _empty_database(database_url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    tables = ", ".join(table.name for table in _db.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


def _flush_redis(url: str) -> None:
    import redis

    connection = redis.Redis.from_url(url)
    try:
        connection.flushdb()
    except redis.ConnectionError:
        pass  # a test that stopped Redis on purpose
    finally:
        connection.close()
    # The limiter may point at storage a test made unreachable on purpose.
    with contextlib.suppress(redis.ConnectionError):
        limiter.reset()


# --- logging in --------------------------------------------------------------------


def csrf_token_from(html: str) -> str:
    """The CSRF token a page carries (base.html puts it in a meta tag)."""
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no csrf-token meta tag"
    return match.group(1)


def post_json(client, path: str, payload: dict, *, headers: dict | None = None, **kwargs):
    """POST JSON as the site's own pages do: with a page's CSRF token in X-CSRFToken."""
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(
        path, json=payload, headers={"X-CSRFToken": token, **(headers or {})}, **kwargs
    )


class AuthActions:
    """Sign up, log in and log out through the real forms, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/auth/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def signup(self, email="ada@example.com", password=TEST_PASSWORD, follow_redirects=False):
        data = {
            "email": email,
            "password": password,
            "password_confirm": password,
            "csrf_token": self.csrf_token("/auth/signup"),
        }
        return self.client.post("/auth/signup", data=data, follow_redirects=follow_redirects)

    def login(self, email="ada@example.com", password=TEST_PASSWORD, next_url=None, **kwargs):
        path = "/auth/login" + (f"?next={next_url}" if next_url else "")
        data = {"email": email, "password": password, "csrf_token": self.csrf_token(path)}
        return self.client.post(path, data=data, **kwargs)

    def logout(self):
        return self.client.post("/auth/logout", data={"csrf_token": self.csrf_token("/pricing")})


@pytest.fixture
def auth(client):
    return AuthActions(client)


# --- a live server and a browser ---------------------------------------------------


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on a free loopback port, one thread a request."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        unavailable("Chromium is not installed (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url():
    """No base URL: browser tests navigate to live_server's address.

    This also stands in for pytest-playwright's fallback fixture, a method that
    pytest 9 warns about (and filterwarnings = error would turn into an error).
    """
    return None


class ConsoleErrors:
    """Every console error and uncaught exception a page logged during a test.

    A browser test fails on any of them (a CSP violation after an HTMX swap, a
    script error, a 5xx), except the line Chromium logs for every 4xx answer: the
    site answers 402/403/422/429 on purpose (HTMX swaps them in) and the tests
    assert what those pages say.
    """

    CLIENT_ERROR = re.compile(
        r"^Failed to load resource: the server responded with a status of 4\d\d"
    )

    def __init__(self):
        self.errors: list[str] = []

    def collect(self, message) -> None:
        if message.type == "error" and not self.CLIENT_ERROR.match(message.text):
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")


@pytest.fixture
def console_errors():
    return ConsoleErrors()


@pytest.fixture
def page(page, console_errors):
    """pytest-playwright's page, failing the test on any console error it logs."""
    page.on("console", console_errors.collect)
    page.on("pageerror", lambda error: console_errors.errors.append(f"uncaught: {error}"))
    yield page
    assert console_errors.errors == [], "the browser console logged errors"
