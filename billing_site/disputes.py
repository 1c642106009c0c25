"""Disputes (chargebacks): an open dispute takes the order's credits, a won one gives them back.

Every dispute event carries the whole dispute object, so one function applies
any of them: it records the dispute's latest state and moves the credits at
most once each way. The order is locked first (as refunds lock it), and a closed
dispute never reopens because of an older event arriving late.
"""

from datetime import UTC, datetime

from sqlalchemy import select

from billing_site import credits
from billing_site.extensions import db
from billing_site.models import Dispute, Order
from billing_site.notifications import hooks as notify
from billing_site.refunds import (
    clawable_credits,
    lock_order_for_payment,
    pack_lot_expiry,
    settled_status,
)
from billing_site.stripe_gateway import stripe_id

CLOSED_STATUSES = ("won", "lost", "warning_closed")
# An inquiry that closes without a chargeback leaves the money with us, as a win does.
RESTORING_STATUSES = ("won", "warning_closed")
OPEN_STATUSES = (
    "warning_needs_response",
    "warning_under_review",
    "needs_response",
    "under_review",
)


def apply_dispute(obj: dict, *, stripe_event_id: str | None = None) -> str:
    """Record a Stripe dispute; take the order's credits when opened, return them once if won."""
    order = lock_order_for_payment(obj.get("payment_intent"), obj.get("charge"))
    existing = _lock_dispute(obj["id"])
    dispute = existing or _new_dispute(obj)
    status = obj.get("status") or "needs_response"
    if dispute.status in CLOSED_STATUSES and status not in CLOSED_STATUSES:
        return f"noop: dispute already {dispute.status}"
    previous_status = existing.status if existing is not None else None
    _copy_fields(dispute, obj, order)
    if order is None:
        outcome = "recorded: no order for this charge"
    elif status in RESTORING_STATUSES:
        outcome = _give_back(order, dispute, stripe_event_id)
    else:
        # Open, or lost without our having seen it open: the credits go either way.
        outcome = _take_credits(order, dispute, stripe_event_id)
    notify.dispute_changed(dispute, order, previous_status)  # logged, counted, admins told
    return outcome


def _take_credits(order: Order, dispute: Dispute, stripe_event_id: str | None) -> str:
    order.status = "disputed"
    if dispute.credits_clawed_back:
        return f"noop: credits already clawed back for {dispute.stripe_dispute_id}"
    # Credits a refund already took are not taken twice.
    taken = max(clawable_credits(order) - order.credits_clawed_back, 0)
    if taken:
        credits.claw_back(
            order.user_id,
            taken,
            reference=f"dispute:{dispute.stripe_dispute_id}",
            order_id=order.id,
            stripe_event_id=stripe_event_id,
            note=f"dispute {dispute.stripe_dispute_id} opened",
        )
    dispute.credits_clawed_back = taken
    order.credits_clawed_back += taken
    return f"disputed: {taken} credits clawed back"


def _give_back(order: Order, dispute: Dispute, stripe_event_id: str | None) -> str:
    restored = 0
    if dispute.credits_clawed_back:
        # The restore lot is unique per dispute, so a second "won" grants nothing.
        lot = credits.grant(
            order.user_id,
            dispute.credits_clawed_back,
            source="restore",
            source_ref=f"dispute:{dispute.stripe_dispute_id}",
            expires_at=pack_lot_expiry(order),
            kind="restore",
            order_id=order.id,
            stripe_event_id=stripe_event_id,
            note=f"dispute {dispute.stripe_dispute_id} won",
        )
        if lot is not None:
            restored = dispute.credits_clawed_back
            order.credits_clawed_back -= restored
    if order.status == "disputed":
        order.status = settled_status(order.amount_cents, order.amount_refunded_cents)
    return f"dispute {dispute.status}: {restored} credits given back"


def _lock_dispute(stripe_dispute_id: str) -> Dispute | None:
    statement = (
        select(Dispute)
        .where(Dispute.stripe_dispute_id == stripe_dispute_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one_or_none()


def _new_dispute(obj: dict) -> Dispute:
    dispute = Dispute(
        stripe_dispute_id=obj["id"],
        amount_cents=int(obj.get("amount") or 0),
        currency=(obj.get("currency") or "usd")[:3],
        status=obj.get("status") or "needs_response",
        credits_clawed_back=0,
    )
    db.session.add(dispute)
    return dispute


def _copy_fields(dispute: Dispute, obj: dict, order: Order | None) -> None:
    dispute.status = obj.get("status") or dispute.status
    dispute.amount_cents = int(obj.get("amount") or dispute.amount_cents)
    dispute.currency = (obj.get("currency") or dispute.currency)[:3]
    dispute.reason = obj.get("reason")
    dispute.charge_id = stripe_id(obj.get("charge"))
    dispute.order_id = order.id if order is not None else dispute.order_id
    due_by = (obj.get("evidence_details") or {}).get("due_by")
    dispute.evidence_due_by = datetime.fromtimestamp(int(due_by), UTC) if due_by else None
    db.session.flush()
