from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from billing_site.extensions import db
from billing_site.models.types import UTCDateTime, utcnow


class Generation(db.Model):
    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_user_id_created_at", "user_id", "created_at"),
        # Only the few pending rows, for `flask sweep-generations`.
        Index(
            "ix_generations_pending_created_at",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # For anonymous visitors: the HMAC client key, never the raw address.
    client_key: Mapped[str | None] = mapped_column(String(64), index=True)
    prompt: Mapped[str] = mapped_column(String(500))
    model: Mapped[str] = mapped_column(String(20))
    credits_charged: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, succeeded, failed
    result: Mapped[str | None] = mapped_column(Text)  # the image (SVG markup)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
