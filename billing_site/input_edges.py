"""Input no view should have to think about, refused at the edge with a clear 400 or 404.

A NUL character (PostgreSQL cannot store one in text) anywhere in the query
string, a form or a JSON body, and an integer past what any id or page can be
(in the query string or a URL's <int:…> part) would otherwise reach the database
and come back as a 500.
"""

import re

from flask import Flask, request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

# Ids are 64-bit; a page number times a page size must stay inside 64 bits too.
LARGEST_QUERY_INTEGER = 2**53
INTEGER = re.compile(r"[+-]?\d+")


class BoundedIntegerConverter(IntegerConverter):
    """<int:…> that matches no number a 64-bit column cannot hold (so: 404)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def refuse_hostile_input():
    if "\x00" in request.path or b"%00" in request.query_string.lower():
        raise BadRequest("The request contains a NUL character, which we cannot accept.")
    for name, value in request.args.items(multi=True):
        if INTEGER.fullmatch(value.strip()) and abs(int(value)) > LARGEST_QUERY_INTEGER:
            raise BadRequest(f"“{name[:40]}” is too large a number.")
    if request.method in ("POST", "PUT", "PATCH") and request.path not in _RAW_BODY_PATHS:
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values = (value for _, values in request.form.lists() for value in values)
            if any("\x00" in value for value in values):
                raise BadRequest("A field contains a NUL character, which we cannot accept.")
        elif request.is_json and b"\\u0000" in request.get_data():
            raise BadRequest("The JSON contains a NUL character, which we cannot accept.")


# Stripe's signed bytes are checked by the webhook itself (stripe_gateway.verify_webhook).
_RAW_BODY_PATHS = frozenset({"/stripe/webhook", "/api/v1/stripe/webhook"})


def install_input_edges(app: Flask) -> None:
    app.url_map.converters["int"] = BoundedIntegerConverter
    # After the body-size check (request_limits puts itself first), before CSRF.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_hostile_input)
