"""Logs a person can follow: one request id per request on every line, text or JSON.

The id comes from `X-Request-ID` only when a trusted proxy (TRUSTED_PROXIES > 0)
sets it, since a client could otherwise pick ids to muddle the logs; else it is
generated. It is on every log line of the request, in the X-Request-ID response
header, and on error pages, for the customer to quote to support.
"""

import json
import logging
import re
import uuid
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# Attributes every LogRecord has; anything else was passed in `extra=` and goes into JSON.
STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def current_request_id() -> str:
    """This request's id, or "-" outside a request (CLI commands, the worker)."""
    if has_request_context():
        return g.get("request_id") or "-"
    return "-"


class RequestIdFilter(logging.Filter):
    """Puts the request id on every record that passes through the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update(
            (key, value) for key, value in vars(record).items() if key not in STANDARD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(app: Flask) -> None:
    """One root handler (kept across the apps tests build), and the request-id hooks."""
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    handler = next((h for h in root.handlers if getattr(h, "pixel_forge", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.pixel_forge = True
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    json_lines = app.config.get("LOG_FORMAT", "text").lower() == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    _register_request_id(app)


def request_id_from(sent: str) -> str:
    """The id a trusted proxy sent, if it is one we accept; otherwise a new one."""
    return sent if VALID_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def _register_request_id(app: Flask) -> None:
    trusted = app.config.get("TRUSTED_PROXIES", 0) > 0

    @app.before_request
    def assign_request_id():
        sent = request.headers.get(REQUEST_ID_HEADER, "") if trusted else ""
        g.request_id = request_id_from(sent)

    @app.after_request
    def send_request_id(response):
        response.headers[REQUEST_ID_HEADER] = current_request_id()
        return response

    @app.context_processor
    def request_id_context():
        return {"request_id": current_request_id()}
