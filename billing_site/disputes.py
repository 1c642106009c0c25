"""Disputes (chargebacks): an open or lost dispute takes the payment's credits,
a won one gives them back.

Every dispute event carries the whole dispute object, so one function applies
any of them: it records the dispute's latest status (by the event's time) and
moves the credits to match, each move once. The order is locked first (as
refunds lock it); an event older than one already applied changes nothing.
"""

from datetime import UTC, datetime

from sqlalchemy import func, or_, select

from billing_site import credits
from billing_site.extensions import db
from billing_site.models import CreditLot, Dispute, Order, StripeEvent
from billing_site.refunds import (
    clawable_credits,
    lock_order_for_payment,
    pack_lot_expiry,
    settled_status,
)
from billing_site.stripe_gateway import stripe_id

# Every status Stripe documents for a dispute (API 2026-07-29.dahlia), and what
# it means for the credits the disputed payment bought.
TAKING_STATUSES = (
    # An inquiry may become a chargeback; the credits are held meanwhile.
    "warning_needs_response",
    "warning_under_review",
    # A chargeback: the money has left us.
    "needs_response",
    "under_review",
    "lost",
    # Appeals follow a loss: the money stays with the cardholder until won.
    "appeal_needs_response",
    "appeal_under_review",
)
RESTORING_STATUSES = (
    "won",
    # An inquiry that closed without a chargeback, or one a prevention service
    # stopped before it was filed (any refund that came with it is its own event).
    "warning_closed",
    "prevented",
)
CLOSED_STATUSES = ("won", "lost", "warning_closed", "prevented")
OPEN_STATUSES = tuple(s for s in TAKING_STATUSES if s != "lost")
# Of two events in one second (Stripe's `created` resolution), the later stage wins.
STAGE = {
    "warning_needs_response": 0,
    "warning_under_review": 0,
    "needs_response": 1,
    "under_review": 1,
    "warning_closed": 2,
    "prevented": 2,
    "won": 2,
    "lost": 2,
    "appeal_needs_response": 3,
    "appeal_under_review": 3,
}


def apply_dispute(
    obj: dict, *, stripe_event_id: str | None = None, event_created: int | None = None
) -> str:
    """Record a Stripe dispute's latest status and move the credits to match it.

    Taking statuses hold the payment's credits, restoring ones give them back;
    a dispute can go back and forth (won, then lost on appeal), and each move
    happens once. An event older than one already seen for the dispute is stale.
    """
    order = lock_order_for_payment(obj.get("payment_intent"), obj.get("charge"))
    dispute = _lock_dispute(obj["id"]) or _new_dispute(obj)
    status = obj.get("status") or "needs_response"
    if _is_stale(dispute, status, stripe_event_id, event_created) or _goes_back(dispute, status):
        return f"noop: stale event (dispute {dispute.status})"
    _copy_fields(dispute, obj, order)
    if order is None:
        return "recorded: no order for this charge"
    if status in RESTORING_STATUSES:
        return _give_back(order, dispute, stripe_event_id)
    if status not in TAKING_STATUSES:
        return f"recorded: unknown dispute status {status}"
    return _take_credits(order, dispute, stripe_event_id)


def _goes_back(dispute: Dispute, status: str) -> bool:
    """A closed dispute moves only to another outcome or to an appeal, never back to
    the stages before its close (Stripe's lifecycle), whatever the events' times."""
    if dispute.id is None or dispute.status not in CLOSED_STATUSES:
        return False
    return STAGE.get(status, 1) < STAGE["won"]


def _is_stale(dispute: Dispute, status: str, event_id: str | None, created: int | None) -> bool:
    if created is None or dispute.id is None:
        return False
    newest = db.session.scalar(
        select(func.max(StripeEvent.created)).where(
            StripeEvent.object_id == dispute.stripe_dispute_id,
            StripeEvent.id != (event_id or ""),
            StripeEvent.status == "processed",
        )
    )
    moment = datetime.fromtimestamp(int(created), UTC)
    if newest is None or moment > newest:
        return False
    if moment < newest:
        return True
    return STAGE.get(status, 1) < STAGE.get(dispute.status, 1)


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
            note=f"dispute {dispute.stripe_dispute_id} {dispute.status}",
        )
    dispute.credits_clawed_back = taken
    order.credits_clawed_back += taken
    return f"disputed: {taken} credits clawed back"


def _give_back(order: Order, dispute: Dispute, stripe_event_id: str | None) -> str:
    restored = 0
    if dispute.credits_clawed_back:
        # One restore lot per move: a repeated "won" finds the dispute holding nothing.
        lot = credits.grant(
            order.user_id,
            dispute.credits_clawed_back,
            source="restore",
            source_ref=_restore_ref(dispute),
            expires_at=pack_lot_expiry(order),
            kind="restore",
            order_id=order.id,
            stripe_event_id=stripe_event_id,
            note=f"dispute {dispute.stripe_dispute_id} {dispute.status}",
        )
        if lot is not None:
            restored = dispute.credits_clawed_back
            order.credits_clawed_back -= restored
            dispute.credits_clawed_back = 0
    if order.status == "disputed":
        order.status = settled_status(order.amount_cents, order.amount_refunded_cents)
    return f"dispute {dispute.status}: {restored} credits given back"


def _restore_ref(dispute: Dispute) -> str:
    """dispute:<id> for the first give-back (as before), dispute:<id>:2 for the next, …"""
    base = f"dispute:{dispute.stripe_dispute_id}"
    earlier = db.session.scalar(
        select(func.count(CreditLot.id)).where(
            CreditLot.source == "restore",
            or_(CreditLot.source_ref == base, CreditLot.source_ref.like(f"{base}:%")),
        )
    )
    return base if not earlier else f"{base}:{earlier + 1}"


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
