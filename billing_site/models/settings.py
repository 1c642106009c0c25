from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing_site.extensions import db
from billing_site.models.types import UTCDateTime, utcnow


class SiteSetting(db.Model):
    """A few values the installation keeps about itself (its id, the last warning seen)."""

    __tablename__ = "site_settings"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
