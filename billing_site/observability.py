"""What an operator needs to know right now, read once for /admin/health and /metrics."""

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from billing_site.extensions import db
from billing_site.health.routes import rate_limit_storage_status
from billing_site.models import Order, OutboundEmail, StripeEvent, utcnow
from billing_site.stripe_gateway import STRIPE_API_VERSION

# The API version the site is written for, which the gateway pins.
PINNED_STRIPE_API_VERSION = STRIPE_API_VERSION
RECENT_EVENTS = 50
# Stored by the webhook, waiting for a worker's first attempt (a retrying event is
# counted as failed instead, so one stuck event does not raise both alerts).
WAITING_STATUSES = ("queued",)
# A handler raised: "retrying" waits for its next attempt, "dead" for an admin.
FAILED_STATUSES = ("retrying", "dead")


@dataclass
class OperationalState:
    last_received_at: datetime | None
    failed_events: int
    backlog_age_seconds: float
    recent_lag_seconds: float | None  # mean created -> applied over the recent events
    payments_needing_review: int
    rate_limit_storage: str
    emails_queued: int
    emails_failed: int
    api_versions: dict[str, int] = field(default_factory=dict)  # of recent events

    @property
    def last_received_timestamp(self) -> float:
        return self.last_received_at.timestamp() if self.last_received_at else 0.0

    @property
    def unexpected_api_versions(self) -> list[str]:
        return [v for v in self.api_versions if not api_version_matches(v)]


def api_version_matches(version: str) -> bool:
    """Events carry "2026-07-29" or "2026-07-29.dahlia"; both are the pinned release."""
    return version == PINNED_STRIPE_API_VERSION or PINNED_STRIPE_API_VERSION.startswith(
        f"{version}."
    )


def current_state() -> OperationalState:
    """Read the webhook, payment, limiter and outbox state (a few indexed queries)."""
    now = utcnow()
    oldest_waiting = _scalar(
        select(func.min(StripeEvent.received_at)).where(StripeEvent.status.in_(WAITING_STATUSES))
    )
    state = OperationalState(
        last_received_at=_scalar(select(func.max(StripeEvent.received_at))),
        failed_events=_count(StripeEvent, StripeEvent.status.in_(FAILED_STATUSES)),
        backlog_age_seconds=(now - oldest_waiting).total_seconds() if oldest_waiting else 0.0,
        recent_lag_seconds=_recent_lag(),
        payments_needing_review=_count(Order, Order.status == "needs_review"),
        rate_limit_storage=rate_limit_storage_status(),
        emails_queued=_count(OutboundEmail, OutboundEmail.status == "queued"),
        emails_failed=_count(OutboundEmail, OutboundEmail.status == "failed"),
        api_versions=_recent_api_versions(),
    )
    db.session.rollback()  # read-only: release the connection
    return state


def _recent_lag() -> float | None:
    recent = (
        select(StripeEvent.created, StripeEvent.processed_at)
        .where(StripeEvent.processed_at.is_not(None))
        .order_by(StripeEvent.received_at.desc())
        .limit(RECENT_EVENTS)
    )
    lags = [(row.processed_at - row.created).total_seconds() for row in db.session.execute(recent)]
    return sum(lags) / len(lags) if lags else None


def _recent_api_versions() -> dict[str, int]:
    version = StripeEvent.payload["api_version"].as_string()
    recent = (
        select(version.label("version"))
        .order_by(StripeEvent.received_at.desc())
        .limit(RECENT_EVENTS)
        .subquery()
    )
    rows = db.session.execute(select(recent.c.version, func.count()).group_by(recent.c.version))
    return {str(row[0] or "unknown"): row[1] for row in rows}


def _count(model, condition) -> int:
    return db.session.execute(select(func.count()).select_from(model).where(condition)).scalar_one()


def _scalar(statement):
    return db.session.execute(statement).scalar_one_or_none()
