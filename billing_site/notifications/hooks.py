"""One-line hooks for the code that moves money outside the webhook's follow-ups.

Each runs inside its caller's transaction: it logs the money event once,
counts it, and queues the email (sent after the commit, see outbox).
"""

import logging

from sqlalchemy import bindparam, or_, select

from billing_site import metrics
from billing_site.credits import TOP_UP_SOURCES
from billing_site.extensions import db
from billing_site.models import CreditLot, Dispute, Order, Refund, User
from billing_site.notifications import messages

log = logging.getLogger("billing_site.money")

LOW_BALANCE_FRACTION = 10  # "low" is under a tenth of the last top-up


def refund_settled(order: Order, refund: Refund) -> None:
    """A refund reached a final status (succeeded or failed), by webhook or admin."""
    metrics.REFUNDS.labels(status=refund.status).inc()
    log.info(
        "money refund status=%s user_id=%s order_id=%s refund_id=%s amount_cents=%s "
        "credits_clawed_back=%s stripe_refund_id=%s",
        refund.status,
        order.user_id,
        order.id,
        refund.id,
        refund.amount_cents,
        refund.credits_clawed_back,
        refund.stripe_refund_id,
    )
    if refund.status == "succeeded":
        messages.refund_issued(order, refund)


def dispute_changed(dispute: Dispute, order: Order | None, previous_status: str | None) -> None:
    """A dispute was recorded or moved to a new status."""
    if dispute.status == previous_status:
        return
    metrics.DISPUTES.labels(status=dispute.status).inc()
    log.info(
        "money dispute status=%s user_id=%s order_id=%s amount_cents=%s credits_clawed_back=%s "
        "stripe_dispute_id=%s",
        dispute.status,
        order.user_id if order is not None else None,
        order.id if order is not None else None,
        dispute.amount_cents,
        dispute.credits_clawed_back,
        dispute.stripe_dispute_id,
    )
    if previous_status is None:
        messages.dispute_opened(dispute, order)


# The last top-up lot, asked only when the warning goes out (built once).
_lots = CreditLot.__table__
LAST_TOP_UP = (
    select(_lots.c.id)
    .where(
        _lots.c.user_id == bindparam("user_id"),
        # OR of plain comparisons: an IN list is re-rendered on every execution.
        or_(*(_lots.c.source == source for source in TOP_UP_SOURCES)),
    )
    .order_by(_lots.c.created_at.desc(), _lots.c.id.desc())
    .limit(1)
)


def balance_spent(user_id: int) -> None:
    """After a spend: warn once per top-up when the balance falls under a tenth of it.

    The spend has just locked the user and read its last top-up's size with the
    balance (credits.LEDGER_COLUMNS), so a spend that leaves plenty asks nothing more.
    """
    user = db.session.get(User, user_id)
    top_up = user.last_top_up_credits
    if top_up is not None and user.balance * LOW_BALANCE_FRACTION < top_up:
        lot_id = db.session.connection().execute(LAST_TOP_UP, {"user_id": user_id}).scalar()
        messages.low_balance(user, db.session.get(CreditLot, lot_id))
