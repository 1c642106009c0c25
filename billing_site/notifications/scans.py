"""The daily scan: credits that expire within a week, told once per lot."""

from datetime import datetime, timedelta

from sqlalchemy import select

from billing_site.extensions import db
from billing_site.models import CreditLot, User, utcnow
from billing_site.notifications import messages

EXPIRY_NOTICE = timedelta(days=7)
# Not the free tier's monthly 10: every free account would be told every month.
EXPIRY_NOTICE_SOURCES = ("pack", "monthly", "admin", "restore")


def notify_expiring_credits(now: datetime | None = None) -> int:
    """Queue an email for each live lot expiring within 7 days; returns how many were new."""
    now = now or utcnow()
    lots = db.session.execute(
        select(CreditLot, User)
        .join(User, User.id == CreditLot.user_id)
        .where(
            CreditLot.source.in_(EXPIRY_NOTICE_SOURCES),
            CreditLot.credits_remaining > 0,
            CreditLot.expires_at > now,
            CreditLot.expires_at <= now + EXPIRY_NOTICE,
        )
        .order_by(CreditLot.expires_at, CreditLot.id)
    ).all()
    queued = 0
    for lot, user in lots:
        if messages.credits_expiring(lot, user) is not None:
            queued += 1
        db.session.commit()  # one lot at a time: each message is sent once it commits
    return queued
