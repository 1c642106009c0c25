"""API keys and the Idempotency-Key claims of API requests."""

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billing_site.extensions import db
from billing_site.models.types import UTCDateTime, utcnow
from billing_site.models.user import User


class ApiKey(db.Model):
    """A customer's key for programs. Only its HMAC is stored; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # HMAC-SHA256 of the whole key with the server secret, hex: found in O(1) by
    # this unique index, and useless to whoever reads the table.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "pf_live_AbC1" — enough for a person to tell their keys apart, nothing more.
    display_prefix: Mapped[str] = mapped_column(String(20))
    scopes: Mapped[list] = mapped_column(JSON, default=list)  # "read", "write", "admin"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class IdempotencyKey(db.Model):
    """One claim per (owner, Idempotency-Key): taken before the work, answered after.

    The unique constraint is the guard: of twenty parallel requests with one key,
    one inserts the row and does the work; the others find it and replay its answer.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(80))  # "user:12", or a visitor's "client:…"
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of method, path and the canonical JSON body: another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None]  # None while the first request is working
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
