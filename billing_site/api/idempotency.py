"""`Idempotency-Key` on every POST and DELETE of the API.

The claim is a row with a unique (owner, key), inserted and committed *before*
the work. Of several requests with one key, exactly one inserts it and does the
work; the others wait for its answer and return that same status and body. A
key reused with another body is refused (422 idempotency_key_reused). Answers
that a retry should not be stuck with (5xx, 409 and 429) give the claim back.
"""

import hashlib
import json
import time
from datetime import timedelta
from functools import wraps

from flask import current_app, make_response, request
from flask_login import current_user
from sqlalchemy import bindparam, delete, select, update

from billing_site.api.shapes import ApiError
from billing_site.client_identity import client_key
from billing_site.extensions import db, insert_once
from billing_site.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
KEY_MAX_LENGTH = 255
LIFETIME = timedelta(hours=24)
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05
NOT_KEPT = {409, 429}

# Every keyed POST runs these, so they are built once (building a statement costs
# about as much as running it). Bound names differ from the columns': values()
# reserves the columns' own.
_claims = IdempotencyKey.__table__
FORGET_EXPIRED = delete(_claims).where(
    _claims.c.owner == bindparam("owner"),
    _claims.c.key == bindparam("key"),
    _claims.c.created_at < bindparam("expired_before"),
)
STORE_ANSWER = (
    update(_claims)
    .where(_claims.c.id == bindparam("claim_id"))
    .values(response_status=bindparam("status"), response_body=bindparam("body"))
)
RELEASE = delete(_claims).where(_claims.c.id == bindparam("claim_id"))
_claim_statements = {}  # dialect name → INSERT … ON CONFLICT DO NOTHING RETURNING id


def idempotent(view):
    """Replay the first answer for a repeated Idempotency-Key (when one is sent)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        key = _checked(key)
        owner, fingerprint = _owner(), request_fingerprint()
        claim_id = claim(owner, key, fingerprint)
        if claim_id is None:
            return replay(owner, key, fingerprint)
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            release(claim_id)
            raise
        keep(claim_id, response)
        return response

    return wrapper


def _checked(key: str) -> str:
    key = key.strip()
    if not key or len(key) > KEY_MAX_LENGTH:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"The Idempotency-Key header must be 1 to {KEY_MAX_LENGTH} characters.",
        )
    return key


def _owner() -> str:
    # Per user, so one customer's keys and sessions share their retries; a visitor
    # (anonymous generations) by the same HMAC client key the cap uses.
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return client_key()[:80]


def request_fingerprint() -> str:
    """SHA-256 of the method, the path with its query and the body (JSON canonicalised)."""
    body = request.get_data()
    parsed = request.get_json(silent=True)
    if parsed is not None:
        body = json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    text = f"{request.method} {request.full_path}\n".encode() + body
    return hashlib.sha256(text).hexdigest()


def claim(owner: str, key: str, fingerprint: str) -> int | None:
    """The new claim's id, or None when (owner, key) is already claimed (and not expired)."""
    now = utcnow()
    db.session.execute(
        FORGET_EXPIRED, {"owner": owner, "key": key, "expired_before": now - LIFETIME}
    )
    values = {"owner": owner, "key": key, "request_hash": fingerprint, "created_at": now}
    claim_id = db.session.execute(_claim_statement(), values).scalar_one_or_none()
    db.session.commit()  # visible to the duplicates at once, before the work starts
    return claim_id


def _claim_statement():
    dialect = db.session.get_bind().dialect.name
    if dialect not in _claim_statements:
        _claim_statements[dialect] = insert_once(
            _claims, ("owner", "key", "request_hash", "created_at"), "owner", "key"
        )
    return _claim_statements[dialect]


def replay(owner: str, key: str, fingerprint: str):
    """The first request's answer, once it has one (waiting for it, within reason)."""
    deadline = time.monotonic() + current_app.config.get("IDEMPOTENCY_WAIT_SECONDS", WAIT_SECONDS)
    while True:
        db.session.rollback()  # a fresh snapshot each look
        row = db.session.execute(
            select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
        ).scalar_one_or_none()
        if row is None:
            raise ApiError(
                409, "idempotency_key_in_use", "The first request with this key failed; retry."
            )
        if row.request_hash != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used with another request; use a new key.",
            )
        if row.response_status is not None:
            response = make_response(row.response_body, row.response_status)
            response.mimetype = "application/json"
            response.headers["Idempotent-Replayed"] = "true"
            return response
        if time.monotonic() > deadline:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
            )
        time.sleep(POLL_SECONDS)


def keep(claim_id: int, response) -> None:
    """Store the answer on the claim, or give the claim back for answers not worth keeping."""
    db.session.rollback()  # the view committed its work; nothing of it is left pending
    status = response.status_code
    if status >= 500 or status in NOT_KEPT:
        release(claim_id)
        return
    # One UPDATE by id: the claim row need not be read to be answered.
    body = response.get_data(as_text=True)
    db.session.execute(STORE_ANSWER, {"claim_id": claim_id, "status": status, "body": body})
    db.session.commit()


def release(claim_id: int) -> None:
    db.session.rollback()
    db.session.execute(RELEASE, {"claim_id": claim_id})
    db.session.commit()


def purge_expired() -> int:
    """Delete every claim older than 24 hours (`flask purge-idempotency-keys`); how many."""
    result = db.session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - LIFETIME)
    )
    db.session.commit()
    return result.rowcount
