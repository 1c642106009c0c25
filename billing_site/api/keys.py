"""API keys over the API: list, create (a program rotating its own key), revoke."""

from datetime import datetime

from flask import g, jsonify

from billing_site.api import auth
from billing_site.api.blueprint import require_customer, require_scope, route
from billing_site.api.idempotency import idempotent
from billing_site.api.shapes import ApiError, iso, json_body, optional_string


@route("/v1/api-keys", endpoint="list_keys")
def list_keys():
    user = require_customer()
    require_scope("read")
    return jsonify({"data": [key_json(key) for key in auth.list_keys(user.id)]})


@route("/v1/api-keys", methods=("POST",), endpoint="create_key")
@idempotent
def create_key():
    user = require_customer()
    require_scope("write")
    data = json_body()
    scopes = data.get("scopes")
    if scopes is not None and not (
        isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)
    ):
        raise ApiError(422, "validation_error", "scopes must be a list of names.", "scopes")
    try:
        new = auth.create_key(
            user,
            optional_string(data, "name", auth.NAME_MAX_LENGTH) or "",
            expires_at=expiry(data.get("expires_at")),
            scopes=scopes,
            created_with=g.get("api_key"),
        )
    except auth.KeyRefused as refused:
        code = "forbidden" if refused.status == 403 else "validation_error"
        raise ApiError(refused.status, code, refused.message, refused.field) from refused
    return jsonify({**key_json(new.record), "key": new.secret}), 201


@route("/v1/api-keys/<int:key_id>", methods=("DELETE",), endpoint="revoke_key")
@idempotent
def revoke_key(key_id: int):
    user = require_customer()
    require_scope("write")
    key = auth.revoke_key(user, key_id)
    if key is None:
        raise ApiError(404, "not_found", "No such API key.")
    return jsonify(key_json(key))


def expiry(value) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(
            422,
            "validation_error",
            "expires_at must be an ISO 8601 time with its zone, like 2027-01-31T00:00:00Z.",
            "expires_at",
        )
    return moment


def key_json(key) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.display_prefix,
        "scopes": list(key.scopes),
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }
