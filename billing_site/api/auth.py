"""API keys: made, listed and revoked by their owner; checked on every /api/v1 request.

A key is `pf_live_` or `pf_test_` (which Stripe mode the site runs in) and 32
random bytes in URL-safe base64. Only its HMAC-SHA256 under the server secret is
stored, under a unique index, so a presented key is found in one indexed read
and the table alone lets nobody use a key.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, g, request
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import joinedload

from billing_site import audit
from billing_site.extensions import db
from billing_site.models import ApiKey, User, utcnow

SCOPES = ("read", "write", "admin")
DEFAULT_SCOPES = ["read", "write"]
KEY_RANDOM_BYTES = 32
NAME_MAX_LENGTH = 100
# last_used_at is written at most this often per key: a busy key must not turn
# every read into a write on one hot row.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyRefused(Exception):
    """The key cannot be made as asked; `message` says why, `field` which input."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    secret: str  # the whole key: shown to its owner once, never stored


def hash_key(secret: str) -> str:
    server_secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(server_secret, secret.encode(), hashlib.sha256).hexdigest()


def key_mode() -> str:
    stripe_key = current_app.config.get("STRIPE_SECRET_KEY") or ""
    return "live" if stripe_key.startswith(("sk_live_", "rk_live_")) else "test"


def create_key(
    user: User,
    name: str,
    *,
    expires_at: datetime | None = None,
    scopes: list[str] | None = None,
    created_with: ApiKey | None = None,
) -> NewKey:
    """A new key for `user`, audited; the secret is in the answer and nowhere else."""
    scopes = check_scopes(user, scopes, created_with)
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        raise KeyRefused(f"Give the key a name of 1 to {NAME_MAX_LENGTH} characters.", "name")
    if expires_at is not None and expires_at <= utcnow():
        raise KeyRefused("The expiry must be in the future.", "expires_at")
    secret = f"pf_{key_mode()}_{secrets.token_urlsafe(KEY_RANDOM_BYTES)}"
    record = ApiKey(
        user_id=user.id,
        name=name,
        key_hash=hash_key(secret),
        display_prefix=secret[:12],
        scopes=scopes,
        expires_at=expires_at,
    )
    db.session.add(record)
    db.session.flush()
    audit.record(
        user.id,
        "api_key.created",
        "api_key",
        record.id,
        {"name": name, "scopes": scopes, "expires_at": expires_at and expires_at.isoformat()},
    )
    db.session.commit()
    return NewKey(record, secret)


def check_scopes(user: User, scopes: list[str] | None, created_with: ApiKey | None) -> list[str]:
    """The scopes asked for, if this user (and the key creating it) may grant them."""
    scopes = list(DEFAULT_SCOPES if scopes is None else scopes)
    if not scopes or any(scope not in SCOPES for scope in scopes):
        raise KeyRefused(f"Scopes are some of: {', '.join(SCOPES)}.", "scopes")
    if "admin" in scopes and not user.is_admin:
        raise KeyRefused("Only an admin can create an admin key.", "scopes", status=403)
    if created_with is not None and not set(scopes) <= set(created_with.scopes):
        # A key can make keys for itself to hand out, never stronger ones.
        raise KeyRefused("A key cannot create a key with scopes it does not have.", "scopes", 403)
    return sorted(set(scopes), key=SCOPES.index)


def list_keys(user_id: int) -> list[ApiKey]:
    """The user's keys, newest first, revoked ones included (marked)."""
    return list(
        db.session.execute(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
        ).scalars()
    )


def revoke_key(user: User, key_id: int) -> ApiKey | None:
    """Revoke the user's own key (audited); None when it is not theirs. Revoking twice is a no-op."""
    key = db.session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(user.id, "api_key.revoked", "api_key", key.id, {"name": key.name})
        db.session.commit()
    return key


# --- checking a request's key ----------------------------------------------------------


def bearer_token() -> str | None:
    """The key in `Authorization: Bearer …`, if the request carries one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or ""


def request_key() -> ApiKey | None:
    """The usable key this request presents (looked up once per request), else None."""
    if "api_key" not in g:
        token = bearer_token()
        g.api_key = authenticate(token) if token else None
    return g.api_key


# The key and its owner in one read, built once: every keyed request needs both
# (the owner is the request's user), and a lazy load of key.user would be a
# second round trip; building a select() costs about as much as running it.
KEY_WITH_OWNER = (
    select(ApiKey)
    .where(ApiKey.key_hash == bindparam("key_hash"))
    .options(joinedload(ApiKey.user, innerjoin=True))
)


def authenticate(token: str) -> ApiKey | None:
    """The usable key for `token` (its last use recorded); None when unknown, revoked or expired."""
    key = db.session.execute(KEY_WITH_OWNER, {"key_hash": hash_key(token)}).scalar_one_or_none()
    now = utcnow()
    if key is None or not key.is_usable(now):
        return None
    # Detached, so the request's commits do not expire it: the scope checks, and
    # the admin audit after the answer, read it without querying it again.
    db.session.expunge(key)
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        _touch(key.id, now)
    return key


def _touch(key_id: int, now: datetime) -> None:
    # Its own small commit, before the request's work, so the view's transaction
    # never waits on (or rolls back) this bookkeeping.
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION))
        .values(last_used_at=now)
    )
    db.session.commit()


def audit_admin_use(key: ApiKey, status: int) -> None:
    """Record one request made with an admin-scoped key (method, path, answer)."""
    audit.record(
        key.user_id,
        "api_key.admin_request",
        "api_key",
        key.id,
        {"method": request.method, "path": request.full_path.rstrip("?"), "status": status},
    )
    db.session.commit()
