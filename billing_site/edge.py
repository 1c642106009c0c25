"""Rules every request meets at the edge: HTTPS with a pinned host, and no caching of private pages."""

from urllib.parse import urlsplit

from flask import Flask, current_app, redirect, request
from flask_login import current_user

# Load balancers check health over plain HTTP; a redirect would fail them.
HTTPS_EXEMPT_PATHS = frozenset({"/healthz"})
PRIVATE_PREFIXES = ("/account", "/admin", "/auth/password")


def redirect_to_https():
    """Plain HTTP goes to SITE_URL's host over HTTPS, never to a host the client named."""
    # As Talisman did: a proxy's X-Forwarded-Proto: https is believed here even
    # without TRUSTED_PROXIES, since all it can do is spare the client a redirect.
    forwarded_https = request.headers.get("X-Forwarded-Proto", "") == "https"
    if request.is_secure or forwarded_https or request.path in HTTPS_EXEMPT_PATHS:
        return None
    host = urlsplit(current_app.config["SITE_URL"]).netloc
    path = request.full_path if request.query_string else request.path
    return redirect(f"https://{host}{path}", code=302)


def is_private() -> bool:
    if request.path.startswith(PRIVATE_PREFIXES):
        return True
    return request.path.startswith("/api/v1/") and current_user.is_authenticated


def no_store_for_private_pages(response):
    # A shared computer's back button or a caching proxy must not replay them.
    if is_private():
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def install_edge_rules(app: Flask) -> None:
    if app.config["FORCE_HTTPS"]:
        app.before_request_funcs.setdefault(None, []).insert(0, redirect_to_https)
    app.after_request(no_store_for_private_pages)
