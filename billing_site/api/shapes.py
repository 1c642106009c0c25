"""The API's one shape: money, timestamps, errors, request bodies and keyset pages.

Errors are flat, as everywhere else on the site (errors.py, the webhook):
`{"error": "<code>", "message": "<a sentence a person can act on>", "field"?: "<name>"}`,
sometimes with context beside them (`retry_after`, `balance`, `pricing_url`).
"""

from datetime import UTC, datetime

from flask import jsonify, make_response, request

from billing_site.catalog import current_catalog
from billing_site.pricing.routes import format_money

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class ApiError(Exception):
    """Answer with `status` and the flat error body (the blueprint's handler renders it)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict:
        body = {"error": self.code, "message": self.message, **self.extra}
        if self.field:
            body["field"] = self.field
        return body


def error_json(error: ApiError):
    return make_response(jsonify(error.body()), error.status)


def money(amount: int, currency: str | None = None) -> dict:
    """Minor units with their currency and what a person reads: 999 → "$9.99"."""
    currency = (currency or current_catalog().currency).lower()
    return {"amount": int(amount), "currency": currency, "display": format_money(amount, currency)}


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC, always with "Z", so every timestamp of the API looks alike."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_unix(timestamp: int | None) -> str | None:
    return iso(datetime.fromtimestamp(timestamp, UTC)) if timestamp else None


def json_body() -> dict:
    """The request's JSON object: 400 when the body is not JSON, 422 when it is not an object."""
    if not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if data is None and not request.is_json:
        raise ApiError(
            400, "invalid_json", "Send the body as JSON (Content-Type: application/json)."
        )
    if data is None:
        raise ApiError(400, "invalid_json", "The body is not valid JSON.")
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "The body must be a JSON object.")
    return data


def optional_string(data: dict, name: str, max_length: int = 200) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ApiError(
            422, "validation_error", f"{name} must be text of 1 to {max_length} characters.", name
        )
    return value.strip()


def optional_int(data: dict, name: str, minimum: int = 1) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(422, "validation_error", f"{name} must be a whole number ≥ {minimum}.", name)
    return value


def page_args() -> tuple[int | None, int]:
    """The keyset cursor (`starting_after`, an id) and `limit` from the query string."""
    cursor = request.args.get("starting_after")
    limit = request.args.get("limit", str(PAGE_SIZE))
    if cursor is not None and not cursor.isdigit():
        raise ApiError(422, "validation_error", "starting_after must be an id.", "starting_after")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
        raise ApiError(
            422, "validation_error", f"limit must be between 1 and {MAX_PAGE_SIZE}.", "limit"
        )
    return (int(cursor) if cursor is not None else None), int(limit)


def keyset(statement, id_column, cursor: int | None, limit: int) -> tuple[list, bool]:
    """Rows newest first after the cursor, and whether more follow (one extra row says so)."""
    from billing_site.extensions import db

    statement = statement.order_by(id_column.desc()).limit(limit + 1)
    if cursor is not None:
        statement = statement.where(id_column < cursor)
    rows = list(db.session.execute(statement).scalars())
    return rows[:limit], len(rows) > limit


def page_json(items: list, has_more: bool, shape) -> dict:
    data = [shape(item) for item in items]
    next_cursor = items[-1].id if has_more and items else None
    return {"data": data, "has_more": has_more, "next_starting_after": next_cursor}
