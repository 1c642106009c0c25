"""One Config, read from the environment (and a `.env` file when present).

Development needs nothing set: SQLite under instance/, in-memory rate limits and
the local stand-in for Stripe. Production (`APP_ENV=production`) refuses to start
when a secret it cannot run safely without is missing.
"""

import os
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"

# Settings a production deployment cannot run without, with the reason shown.
REQUIRED_IN_PRODUCTION = {
    "SECRET_KEY": "sessions and CSRF tokens would be forgeable",
    "DATABASE_URL": "orders and credits would go to a throwaway SQLite file",
    "STRIPE_SECRET_KEY": "checkout and refunds cannot reach Stripe",
    "STRIPE_WEBHOOK_SECRET": "webhook signatures cannot be verified",
}


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and why."""


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _optional_bool(name: str) -> bool | None:
    value = os.environ.get(name, "")
    return _bool(name, False) if value.strip() else None


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return f"sqlite:///{INSTANCE_DIR / 'billing.sqlite3'}"
    # Hosting platforms hand out postgres:// URLs; SQLAlchemy wants the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config() -> dict:
    """Read every setting from the environment into a dict for app.config."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)
    env = os.environ.get("APP_ENV", "development").strip().lower()
    return {
        "APP_ENV": env,
        "SECRET_KEY": os.environ.get("SECRET_KEY", ""),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "SITE_URL": os.environ.get("SITE_URL", "http://127.0.0.1:5000").rstrip("/"),
        "SQLALCHEMY_DATABASE_URI": _database_url(),
        # No pool_pre_ping (a round trip before every transaction): billing_site/database.py
        # pings only connections that sat idle, and SQLAlchemy replaces one that dies in use.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_recycle": 3600},
        "DATABASE_IDLE_PING_SECONDS": _int("DATABASE_IDLE_PING_SECONDS", 10),
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": True,
        # When Redis is unreachable, limits keep holding per process rather than vanish.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_KEY_PREFIX": os.environ.get("RATELIMIT_KEY_PREFIX", "billing"),
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT", "10 per minute"),
        # Wrong passwords per account before only clients that never failed may try,
        # and the ceiling that holds even for them (auth/throttle.py).
        "LOGIN_ACCOUNT_FAILURE_LIMIT": os.environ.get(
            "LOGIN_ACCOUNT_FAILURE_LIMIT", "10 per 15 minutes"
        ),
        "LOGIN_ACCOUNT_HARD_LIMIT": os.environ.get("LOGIN_ACCOUNT_HARD_LIMIT", "100 per day"),
        "SIGNUP_RATE_LIMIT": os.environ.get("SIGNUP_RATE_LIMIT", "5 per hour"),
        # Free monthly credits wait for a verified email (set false to grant at sign-up).
        "REQUIRE_EMAIL_VERIFICATION": _bool("REQUIRE_EMAIL_VERIFICATION", True),
        "EMAIL_VERIFICATION_MAX_AGE_HOURS": _int("EMAIL_VERIFICATION_MAX_AGE_HOURS", 48),
        # "Forgot your password?": how long its link works, and how often it is sent,
        # per client address and per email address (so nobody floods one inbox).
        "PASSWORD_RESET_MAX_AGE_MINUTES": _int("PASSWORD_RESET_MAX_AGE_MINUTES", 60),
        "PASSWORD_RESET_RATE_LIMIT": os.environ.get("PASSWORD_RESET_RATE_LIMIT", "5 per hour"),
        "PASSWORD_RESET_EMAIL_LIMIT": os.environ.get("PASSWORD_RESET_EMAIL_LIMIT", "3 per hour"),
        # A session cookie is refused once this old, however it was copied.
        "PERMANENT_SESSION_LIFETIME": timedelta(days=_int("SESSION_LIFETIME_DAYS", 7)),
        "REMEMBER_COOKIE_DURATION": timedelta(days=_int("SESSION_LIFETIME_DAYS", 7)),
        "CHECKOUT_RATE_LIMIT": os.environ.get("CHECKOUT_RATE_LIMIT", "5 per minute"),
        # The success page polls every 2 s; Stripe is asked about one Checkout
        # Session at most once per this many seconds, and each customer may load
        # these pages (and open the billing portal) only so often.
        "CHECKOUT_RETRIEVE_INTERVAL_SECONDS": _int("CHECKOUT_RETRIEVE_INTERVAL_SECONDS", 3),
        "SUCCESS_PAGE_RATE_LIMIT": os.environ.get("SUCCESS_PAGE_RATE_LIMIT", "40 per minute"),
        "PORTAL_RATE_LIMIT": os.environ.get("PORTAL_RATE_LIMIT", "10 per minute"),
        "API_KEY_RATE_LIMIT": os.environ.get("API_KEY_RATE_LIMIT", "120 per minute"),
        "ANONYMOUS_DAILY_LIMIT": _int("ANONYMOUS_DAILY_LIMIT", 3),
        # How many visitors (told apart by X-Client-Fingerprint) one address may hold.
        "ANONYMOUS_ADDRESS_FACTOR": _int("ANONYMOUS_ADDRESS_FACTOR", 10),
        "PREMIUM_HOURLY_LIMIT": _int("PREMIUM_HOURLY_LIMIT", 100),
        "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", 0),
        "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", ""),
        "STRIPE_PUBLISHABLE_KEY": os.environ.get("STRIPE_PUBLISHABLE_KEY", ""),
        # Several secrets may be listed (comma-separated) while one is being rolled.
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
        "STRIPE_API_BASE": os.environ.get("STRIPE_API_BASE", ""),
        "STRIPE_TIMEOUT_SECONDS": _int("STRIPE_TIMEOUT_SECONDS", 20),
        # Prefixes every idempotency key; empty: generated once and kept in the database.
        "INSTALLATION_ID": os.environ.get("INSTALLATION_ID", "").strip(),
        # The local Stripe stand-in's state (development only); empty means instance/.
        "LOCAL_STRIPE_STATE_FILE": os.environ.get("LOCAL_STRIPE_STATE_FILE", ""),
        "CATALOG_FILE": os.environ.get("CATALOG_FILE", ""),
        # Prices an operator already has in Stripe: "pixel_forge_basic_monthly=price_…,…".
        "STRIPE_PRICE_IDS": os.environ.get("STRIPE_PRICE_IDS", ""),
        "GENERATOR_URL": os.environ.get("GENERATOR_URL", ""),
        "GENERATOR_TIMEOUT_SECONDS": _int("GENERATOR_TIMEOUT_SECONDS", 30),
        # `flask sweep-generations` fails and refunds generations pending longer than
        # this: far past the generator's timeout (and gunicorn's 30 s worker timeout),
        # so only a generation whose worker died is ever swept.
        "GENERATION_STALE_AFTER_SECONDS": _int("GENERATION_STALE_AFTER_SECONDS", 600),
        # The worker (`flask worker`): a failed event is retried after 30 s, doubling,
        # so 14 attempts span about 3 days, as Stripe's own retries do; then "dead".
        "WORKER_RETRY_BASE_SECONDS": _float("WORKER_RETRY_BASE_SECONDS", 30),
        "WORKER_MAX_ATTEMPTS": _int("WORKER_MAX_ATTEMPTS", 14),
        # Polling when LISTEN/NOTIFY is unavailable (SQLite) or missed a wake-up.
        "WORKER_POLL_SECONDS": _float("WORKER_POLL_SECONDS", 2),
        # Under a backlog, up to this many events are claimed and applied in one
        # transaction (worker/queue.py); 1 applies each in its own.
        "WORKER_BATCH_SIZE": _int("WORKER_BATCH_SIZE", 10),
        "WORKER_HEARTBEAT_SECONDS": _float("WORKER_HEARTBEAT_SECONDS", 5),
        # /healthz says "degraded" when no worker has beaten for this long.
        "WORKER_STALE_AFTER_SECONDS": _int("WORKER_STALE_AFTER_SECONDS", 60),
        # The worker's CPU priority below the web's (nice, 0-19): see worker/cli.py.
        "WORKER_NICENESS": _int("WORKER_NICENESS", 19),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # None means "follow APP_ENV" (decided in finalize_config, after overrides).
        "SESSION_COOKIE_SECURE": _optional_bool("SESSION_COOKIE_SECURE"),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "FORCE_HTTPS": _bool("FORCE_HTTPS", False),
        # Request bodies (see request_limits): forms and the API need a few KiB,
        # Stripe's events stay well under 1 MiB. Bigger bodies get a 413 unread.
        "MAX_FORM_BYTES": _int("MAX_FORM_BYTES", 64 * 1024),
        "MAX_WEBHOOK_BYTES": _int("MAX_WEBHOOK_BYTES", 1024 * 1024),
        # A body not wholly arrived after this many seconds gets a 408.
        "BODY_READ_TIMEOUT_SECONDS": _int("BODY_READ_TIMEOUT_SECONDS", 10),
        "WTF_CSRF_TIME_LIMIT": None,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # Notifications, metrics and logs (billing_site.notifications, billing_site.metrics).
        # smtp://user:pass@host:port (?tls=1 for STARTTLS, smtps:// for TLS); empty: the
        # messages stay in the outbox (/dev/mail in development) and are never sent.
        "MAIL_URL": os.environ.get("MAIL_URL", ""),
        "MAIL_DEFAULT_SENDER": os.environ.get(
            "MAIL_DEFAULT_SENDER", "Pixel Forge <billing@localhost>"
        ),
        "MAIL_TIMEOUT": _int("MAIL_TIMEOUT", 10),
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN", ""),
        "METRICS_ALLOWED_NETWORKS": os.environ.get("METRICS_ALLOWED_NETWORKS", ""),
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
    }


DEVELOPMENT_SECRET_KEY = "dev-only-not-secret"
DEVELOPMENT_WEBHOOK_SECRET = "whsec_local_development"


def finalize_config(config: dict) -> None:
    """Fail fast in production when a secret is missing; fill development defaults."""
    if config.get("APP_ENV") == "production":
        for name, consequence in REQUIRED_IN_PRODUCTION.items():
            if not config.get(name):
                raise ConfigError(
                    f"{name} is not set; refusing to start in production ({consequence})."
                )
        if not webhook_secrets(config):
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET holds no secret (only commas or spaces); refusing to "
                "start in production (webhook signatures cannot be verified)."
            )
    if config.get("SESSION_COOKIE_SECURE") is None:
        # Production serves over HTTPS only, so its cookies never travel in clear.
        config["SESSION_COOKIE_SECURE"] = config.get("APP_ENV") == "production"
    config["REMEMBER_COOKIE_SECURE"] = config["SESSION_COOKIE_SECURE"]
    # Flask's own cap, for anything request_limits does not set per path.
    config["MAX_CONTENT_LENGTH"] = config["MAX_FORM_BYTES"]
    config["SECRET_KEY"] = config["SECRET_KEY"] or DEVELOPMENT_SECRET_KEY
    config["STRIPE_WEBHOOK_SECRET"] = config["STRIPE_WEBHOOK_SECRET"] or DEVELOPMENT_WEBHOOK_SECRET


def webhook_secrets(config: dict) -> list[str]:
    """Every secret a webhook signature may be made with (several while rolling)."""
    return [item.strip() for item in config["STRIPE_WEBHOOK_SECRET"].split(",") if item.strip()]
