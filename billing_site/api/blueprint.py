"""The API blueprint: who is calling (a key, a cookie session or nobody), limits, errors.

Every /api/v1 view is registered through `route`, which puts it under the per-key
rate limit, so no route can forget it. An `Authorization: Bearer` key counts for
this request only (no session, no cookie) and needs no CSRF token; a cookie
session still does, as on the pages. A request with neither carries no credential
a forged request could borrow, so it needs no token either: that is the anonymous
caller (the free credit check and free generations), capped per client as on the page.
"""

from flask import Blueprint, current_app, g, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from billing_site.api import auth
from billing_site.api.shapes import ApiError, error_json
from billing_site.errors import error_response
from billing_site.extensions import csrf, limiter

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)  # checked below, for cookie sessions only

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
INVALID_KEY_MESSAGE = (
    "This API key is unknown, revoked or expired. Create a new one on /account/api-keys."
)


def api_key_rate_limit() -> str:
    return current_app.config["API_KEY_RATE_LIMIT"]


def api_key_bucket() -> str:
    return f"api-key:{auth.request_key().id}"


# One budget per key across every route of the API.
per_key_limit = limiter.shared_limit(
    api_key_rate_limit,
    scope="api-key",
    key_func=api_key_bucket,
    exempt_when=lambda: auth.request_key() is None,
    override_defaults=False,
)


def route(rule: str, methods: tuple[str, ...] = ("GET",), endpoint: str | None = None):
    """Register an /api view (under the per-key limit); stack it for an alias URL."""

    def register(view):
        limited = getattr(view, "_api_limited", None) or per_key_limit(view)
        limited._api_limited = limited
        bp.add_url_rule(rule, endpoint or view.__name__, limited, methods=list(methods))
        return limited

    return register


@bp.before_request
def identify_caller():
    token = auth.bearer_token()
    if token is not None:
        key = auth.request_key()
        if key is None:
            raise ApiError(401, "invalid_api_key", INVALID_KEY_MESSAGE)
        # The key's owner for this request only: Flask-Login reads g first, so no
        # session is loaded and none is written.
        g._login_user = key.user
        return None
    if request.method in STATE_CHANGING and _has_session_cookie():
        csrf.protect()  # a cookie travels with cross-site requests; a key does not
    return None


def _has_session_cookie() -> bool:
    return current_app.config["SESSION_COOKIE_NAME"] in request.cookies


@bp.after_request
def audit_admin_keys(response):
    key = g.get("api_key")
    if key is not None and key.has_scope("admin"):
        auth.audit_admin_use(key, response.status_code)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def require_customer():
    """The caller's user, or 401 (no key, no session)."""
    if not current_user.is_authenticated:
        raise ApiError(
            401,
            "unauthorized",
            "Send an API key (Authorization: Bearer pf_…) or log in to use this.",
        )
    return current_user._get_current_object()


def require_scope(scope: str) -> None:
    """A key must carry `scope`; a cookie session stands for its user in full."""
    key = g.get("api_key")
    if key is not None and not key.has_scope(scope):
        raise ApiError(403, "insufficient_scope", f"This API key lacks the {scope!r} scope.")


def require_admin():
    """An admin: by session, or by an admin-scoped key created by an admin."""
    user = require_customer()
    key = g.get("api_key")
    if not user.is_admin or (key is not None and not key.has_scope("admin")):
        raise ApiError(
            403, "forbidden", "This needs an admin, and an API key with the admin scope."
        )
    return user


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    return error_json(error)


@bp.errorhandler(CSRFError)
def csrf_failed(error):
    return error_response(
        400,
        "A request with a session cookie needs the X-CSRFToken header; "
        "programs should send an API key instead.",
        error="csrf_failed",
    )


@bp.errorhandler(429)
def too_many_requests(error):
    # A limit's on_breach (the anonymous cap, fair use) built the friendly answer.
    response = getattr(error, "response", None)
    if response is not None:
        return response
    return error_response(429, f"Too many requests (limit: {error.description}). Slow down.")
