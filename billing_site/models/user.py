from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column, validates

from billing_site.extensions import db
from billing_site.lookalikes import skeleton
from billing_site.models.types import UTCDateTime, utcnow


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored normalised (see auth.services.normalise_email) so lookups are exact.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    # The email's confusable skeleton (billing_site.lookalikes): a look-alike cannot sign up.
    email_skeleton: Mapped[str | None] = mapped_column(String(254), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Kept by the ledger in the same transaction as each entry: read in O(1).
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The earliest expiry among live lots; reading the balance expires lots past it.
    next_expiry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The size of the newest top-up lot (credits.TOP_UP_SOURCES), kept by the ledger:
    # after every spend the low-balance warning compares the balance with it.
    last_top_up_credits: Mapped[int | None] = mapped_column(BigInteger)
    # Bumped by log-out, a password change and "log out everywhere": every session
    # (and remember cookie) carries the version it was made with (see get_id).
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # Set by the signed link in the verification email; free credits wait for it.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @validates("email")
    def _keep_skeleton(self, _key: str, email: str) -> str:
        self.email_skeleton = skeleton(email)
        return email

    def get_id(self) -> str:
        """Flask-Login's alternative id: a session made before a bump no longer loads."""
        return f"{self.id}:{self.session_version}"

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"
