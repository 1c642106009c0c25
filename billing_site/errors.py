"""Error pages in the layout, JSON errors for programs, and never a stack trace."""

import logging

from flask import Flask, jsonify, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from billing_site.extensions import db

log = logging.getLogger(__name__)

FRIENDLY_MESSAGES = {
    400: "The request could not be understood. Please check what you sent and try again.",
    401: "Please log in to continue.",
    402: "You are out of credits. Buy a pack or subscribe to keep generating.",
    403: "You do not have access to this page.",
    404: "We could not find that page.",
    405: "That action is not allowed here.",
    408: "The request took too long to arrive. Please try again.",
    413: "What you sent is too large.",
    422: "Some of what you sent is not valid.",
    429: "Too many requests. Please wait a moment and try again.",
    500: "Something went wrong on our side. Nothing was charged twice; please try again.",
}
CSRF_MESSAGE = (
    "This form has expired or did not come from this site. Reload the page and try again."
)


def error_response(status: int, message: str | None = None, error: str | None = None):
    """A JSON body under /api/, otherwise the error page in the site's layout."""
    message = message or FRIENDLY_MESSAGES.get(status, "Something went wrong.")
    if wants_json():
        code = error or _error_code(status)
        return jsonify({"error": code, "message": message}), status
    return render_template("errors/error.html", status=status, message=message), status


def wants_json() -> bool:
    """Programs (the API, Stripe at the webhook) get JSON; people get the page."""
    from billing_site.request_limits import WEBHOOK_PATHS

    return request.path.startswith("/api/") or request.path in WEBHOOK_PATHS


def _error_code(status: int) -> str:
    name = HTTP_STATUS_CODES.get(status, "error")
    return name.lower().replace(" ", "_").replace("'", "")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_failed(error):
        log.info("csrf rejected path=%s reason=%s", request.path, error.description)
        return error_response(400, CSRF_MESSAGE, error="csrf_failed")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code and error.code >= 500:
            return server_error(error)
        # A description set deliberately by abort(…, description=…) is kept.
        message = error.description if _custom_description(error) else None
        if isinstance(error, RateLimitExceeded):
            # Its description is the bare limit ("10 per 1 minute"): say it plainly.
            message = f"{FRIENDLY_MESSAGES[429]} (Limit: {error.description}.)"
        # Flask-Limiter adds Retry-After to a 429 after this handler runs.
        return error_response(error.code or 500, message)

    @app.errorhandler(Exception)
    def server_error(error):
        # The transaction may be half-done; nothing of it must be committed later.
        db.session.rollback()
        if not isinstance(error, HTTPException):
            log.exception("unhandled error path=%s", request.path)
        return error_response(500)


def _custom_description(error: HTTPException) -> bool:
    return bool(error.description) and error.description != type(error).description
