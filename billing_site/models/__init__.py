"""Typed models, one module per domain; import them from here."""

from billing_site.models.admin import AuditLog, Dispute, Refund
from billing_site.models.billing import (
    LIVE_SUBSCRIPTION_STATUSES,
    ORDER_STATUSES,
    CreditLot,
    JobRun,
    LedgerEntry,
    Order,
    StripeEvent,
    Subscription,
    WorkerHeartbeat,
)
from billing_site.models.generation import Generation
from billing_site.models.settings import SiteSetting
from billing_site.models.types import UTCDateTime, utcnow
from billing_site.models.user import User

__all__ = [
    "AuditLog",
    "CreditLot",
    "Dispute",
    "Generation",
    "JobRun",
    "LIVE_SUBSCRIPTION_STATUSES",
    "LedgerEntry",
    "ORDER_STATUSES",
    "Order",
    "Refund",
    "SiteSetting",
    "StripeEvent",
    "Subscription",
    "UTCDateTime",
    "User",
    "WorkerHeartbeat",
    "utcnow",
]
