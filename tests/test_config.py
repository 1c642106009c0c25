"""Configuration: development needs nothing set; production refuses to start unsafe."""

import pytest

from billing_site import create_app
from billing_site.config import ConfigError, load_config

PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "a-long-random-production-secret",
    "DATABASE_URL": "postgresql://billing@db.internal/billing",
    "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://billing@db.internal/billing",
    "STRIPE_SECRET_KEY": "sk_test_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
}


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("SECRET_KEY", "forgeable"),
        ("DATABASE_URL", "SQLite"),
        ("STRIPE_SECRET_KEY", "Stripe"),
        ("STRIPE_WEBHOOK_SECRET", "signatures"),
    ],
)
def test_production_refuses_to_start_without_a_required_setting(missing, reason):
    with pytest.raises(ConfigError) as raised:
        create_app({**PRODUCTION, missing: ""})

    message = str(raised.value)
    assert message.startswith(f"{missing} is not set")
    assert reason in message
    assert "\n" not in message


def test_production_starts_when_everything_is_set():
    app = create_app(PRODUCTION)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True
    assert app.extensions["stripe_gateway"].is_local is False
    # The local test checkout must never exist where real money moves.
    assert not any(rule.rule.startswith("/dev/") for rule in app.url_map.iter_rules())


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No settings in the environment, and no .env file read."""
    for name in list(load_config()):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("billing_site.config.PROJECT_ROOT", tmp_path)
    monkeypatch.setattr("billing_site.config.load_dotenv", lambda *args, **kwargs: False)
    return monkeypatch


def test_development_needs_nothing_set(clean_environment):
    config = load_config()

    assert config["APP_ENV"] == "development"
    assert config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert config["SQLALCHEMY_DATABASE_URI"].endswith("instance/billing.sqlite3")
    assert config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["LOGIN_RATE_LIMIT"] == "10 per minute"
    assert config["STRIPE_SECRET_KEY"] == ""


def test_development_app_gets_a_local_secret_and_insecure_cookies(clean_environment, tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}"})

    assert app.config["SECRET_KEY"]
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.extensions["stripe_gateway"].is_local is True


@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://"])
def test_a_hosting_platform_database_url_gets_the_psycopg_driver(clean_environment, scheme):
    clean_environment.setenv("DATABASE_URL", f"{scheme}billing:pw@db.internal:5432/billing")

    assert load_config()["SQLALCHEMY_DATABASE_URI"] == (
        "postgresql+psycopg://billing:pw@db.internal:5432/billing"
    )


def test_settings_are_read_from_the_environment(clean_environment):
    clean_environment.setenv("LOGIN_RATE_LIMIT", "3 per minute")
    clean_environment.setenv("TRUSTED_PROXIES", "2")
    clean_environment.setenv("SESSION_COOKIE_SECURE", "true")

    config = load_config()

    assert config["LOGIN_RATE_LIMIT"] == "3 per minute"
    assert config["TRUSTED_PROXIES"] == 2
    assert config["SESSION_COOKIE_SECURE"] is True
