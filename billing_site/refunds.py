"""Refunds: an admin's refund from the order page, and what Stripe says about refunds.

Two facts carry the whole design:

* `order.amount_refunded_cents` is what the site has *applied* (credits clawed
  back for it). Every path that applies a refund locks the order first, so an
  admin's confirmation, `charge.refunded` and `refund.updated` take turns.
* Credits are clawed back by a cumulative formula (the refunded share of the
  order's credits, minus what was already clawed back), so applying refunds in
  any order, or one total twice, never takes more than the refunded share.

An admin's refund runs in three steps, because a Stripe call must never sit
inside a database transaction holding locks: reserve (a pending Refund row with
the next sequence number, committed, which fixes the idempotency key
"refund-<order>-<sequence>"), call Stripe with that key, then settle (commit the
outcome). A crash or timeout between the steps leaves a pending refund that the
webhook, `reconcile` or a manual retry (same key) settles; never a second refund.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from billing_site import audit, credits, formatting
from billing_site.extensions import db
from billing_site.models import CreditLot, Order, Refund, utcnow
from billing_site.notifications import hooks as notify
from billing_site.stripe_gateway import GatewayError, current_gateway, stripe_id

REFUND_REASONS = {
    "requested_by_customer": "Requested by customer",
    "duplicate": "Duplicate",
    "fraudulent": "Fraudulent",
}
# A payment under review can be refunded: that is one way an admin resolves it.
REFUNDABLE_STATUSES = ("paid", "partially_refunded", "needs_review")
# Stripe forgets an idempotency key after 24 hours; a retry after that could
# create a second refund, so older pending refunds are settled by reconcile only.
RETRY_WINDOW = timedelta(hours=23)
PENDING_MESSAGE = (
    "Stripe did not answer in time, so the refund is pending — it will be settled "
    "by reconcile or the webhook. Nothing will be refunded twice."
)


class RefundRefused(Exception):
    """The refund cannot be made as asked; `message` says why, for the admin."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class RefundPreview:
    order_id: int
    amount_cents: int
    refundable_cents: int
    credits: int
    balance_before: int

    @property
    def balance_after(self) -> int:
        return self.balance_before - self.credits

    @property
    def goes_negative(self) -> bool:
        return self.balance_after < 0


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    state: str  # succeeded, pending, failed, duplicate
    message: str


# --- pure helpers -------------------------------------------------------------------


def credits_to_claw_back(
    order_credits: int, amount_cents: int, total_refunded_cents_after: int, already_clawed: int
) -> int:
    """Credits to take now so the total taken is the refunded share, rounded down.

    floor(order_credits × refunded_total / amount) − already_clawed, never below
    zero: refunds of 30% and then 50% take 30% and then 20% more.
    """
    if order_credits <= 0 or amount_cents <= 0:
        return 0
    refunded = min(max(total_refunded_cents_after, 0), amount_cents)
    return max(order_credits * refunded // amount_cents - already_clawed, 0)


def settled_status(amount_cents: int, amount_refunded_cents: int) -> str:
    """An order's status from its money alone (no dispute open)."""
    if amount_refunded_cents >= amount_cents:
        return "refunded"
    if amount_refunded_cents > 0:
        return "partially_refunded"
    return "paid"


def format_cents(cents: int) -> str:
    return formatting.money(cents)


# --- reading ------------------------------------------------------------------------


def clawable_credits(order: Order) -> int:
    """The credits a full refund of this payment takes back: a pack's credits; for a
    subscription payment, the monthly lot it paid for (none for an unlimited tier)."""
    if order.kind == "pack":
        return order.credits if order.credits > 0 else 0
    if not order.stripe_invoice_id:
        return 0
    granted = db.session.scalar(
        select(CreditLot.credits_granted).where(
            CreditLot.source == "monthly", CreditLot.source_ref == order.stripe_invoice_id
        )
    )
    return granted or 0


def reserved_cents(order_id: int) -> int:
    """Money in refunds sent (or being sent) to Stripe but not yet settled."""
    return db.session.scalar(
        select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
            Refund.order_id == order_id, Refund.status == "pending"
        )
    )


def refundable_now(order: Order) -> int:
    return order.refundable_cents - reserved_cents(order.id)


def check_refund(order: Order, amount_cents: int | None) -> int:
    """The amount to refund (None: everything still refundable), or RefundRefused."""
    if order.status not in REFUNDABLE_STATUSES:
        raise RefundRefused(f"Only a paid order can be refunded; this one is {order.status}.")
    if not (order.payment_intent_id or order.charge_id):
        raise RefundRefused("This order has no payment at Stripe to refund.")
    available = refundable_now(order)
    if available <= 0:
        raise RefundRefused("Nothing is left to refund on this order.")
    amount = available if amount_cents is None else amount_cents
    if amount <= 0:
        raise RefundRefused("The amount must be more than zero.", status=422)
    if amount > available:
        raise RefundRefused(
            f"At most {format_cents(available)} can still be refunded on this order."
        )
    return amount


def preview(order: Order, amount_cents: int | None) -> RefundPreview:
    """What a refund of `amount_cents` would do to the customer's credits (writes nothing)."""
    amount = check_refund(order, amount_cents)
    reserved = reserved_cents(order.id)
    # Pending refunds will claw back their share first; this one takes what follows.
    already = order.credits_clawed_back + credits_to_claw_back(
        clawable_credits(order),
        order.amount_cents,
        order.amount_refunded_cents + reserved,
        order.credits_clawed_back,
    )
    taken = credits_to_claw_back(
        clawable_credits(order),
        order.amount_cents,
        order.amount_refunded_cents + reserved + amount,
        already,
    )
    return RefundPreview(
        order_id=order.id,
        amount_cents=amount,
        refundable_cents=refundable_now(order),
        credits=taken,
        balance_before=credits.current_balance(order.user_id),
    )


# --- an admin's refund --------------------------------------------------------------


def refund_order(
    order_id: int,
    *,
    admin_id: int,
    amount_cents: int | None,
    reason: str,
    note: str | None,
    request_token: str,
) -> RefundResult:
    """Refund an order once per confirmed form: never more than was paid, one Stripe call.

    Raises RefundRefused (nothing written, Stripe not called) when the amount is
    more than remains refundable.
    """
    refund, duplicate = _reserve(order_id, admin_id, amount_cents, reason, note, request_token)
    if duplicate:
        return RefundResult(
            refund,
            "duplicate",
            f"This refund form was already submitted; refund #{refund.sequence} is "
            f"{refund.status}.",
        )
    return _send_to_stripe(refund.id, admin_id)


def retry_refund(refund_id: int, *, admin_id: int) -> RefundResult:
    """Ask Stripe again for a pending refund, with the same idempotency key."""
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.status != "pending":
        raise RefundRefused("Only a pending refund can be retried.")
    if refund.created_at < utcnow() - RETRY_WINDOW:
        raise RefundRefused(
            "This refund is more than a day old, so Stripe no longer knows its key. "
            "Check it in the Stripe dashboard; reconcile will settle it."
        )
    return _send_to_stripe(refund.id, admin_id)


def _reserve(order_id, admin_id, amount_cents, reason, note, request_token):
    """Commit a pending Refund row (step 1), or find the one this form already made."""
    try:
        order = lock_order(order_id)
        # The order lock queues parallel submissions of one form; all but the
        # first find its committed row here.
        existing = _refund_for_token(request_token)
        if existing is not None:
            db.session.rollback()
            return existing, True
        amount = check_refund(order, amount_cents)
        refund = Refund(
            order_id=order.id,
            sequence=_next_sequence(order.id),
            amount_cents=amount,
            reason=reason,
            note=note or None,
            status="pending",
            admin_id=admin_id,
            request_token=request_token,
        )
        db.session.add(refund)
        db.session.flush()
        audit.record(
            admin_id,
            "refund.requested",
            "order",
            order.id,
            {"refund_id": refund.id, "amount_cents": amount, "reason": reason, "note": note},
        )
        db.session.commit()
    except RefundRefused:
        db.session.rollback()
        raise
    except IntegrityError:
        # The unique token is the last guard if two submissions ever passed the lock.
        db.session.rollback()
        existing = _refund_for_token(request_token)
        if existing is None:
            raise
        return existing, True
    return refund, False


def _send_to_stripe(refund_id: int, admin_id: int | None) -> RefundResult:
    """Step 2 and 3: call Stripe with the refund's fixed key, then settle the outcome."""
    refund = db.session.get(Refund, refund_id)
    order = refund.order
    params = {
        "amount": refund.amount_cents,
        "metadata": {"order_id": str(order.id), "refund_id": str(refund.id)},
    }
    if order.payment_intent_id:
        params["payment_intent"] = order.payment_intent_id
    else:
        params["charge"] = order.charge_id
    if refund.reason in REFUND_REASONS:
        params["reason"] = refund.reason
    key = refund.idempotency_key
    # No transaction (and no lock) stays open while Stripe is called.
    db.session.commit()
    try:
        stripe_refund = current_gateway().create_refund(params, idempotency_key=key)
    except GatewayError as error:
        if error.retryable:
            return _leave_pending(refund_id, admin_id, error.message)
        return _record_refusal(refund_id, admin_id, error.message)
    return _settle(refund_id, admin_id, stripe_refund)


def _leave_pending(refund_id: int, admin_id: int | None, error: str) -> RefundResult:
    refund = db.session.get(Refund, refund_id)
    refund.failure_reason = error
    audit.record(admin_id, "refund.pending", "refund", refund.id, {"error": error})
    db.session.commit()
    return RefundResult(refund, "pending", PENDING_MESSAGE)


def _record_refusal(refund_id: int, admin_id: int | None, error: str) -> RefundResult:
    """Stripe refused the request outright: no refund exists there, none here."""
    order = lock_order(db.session.get(Refund, refund_id).order_id)
    refund = _lock_refund(refund_id)
    apply_refund_failed(order, refund, error)
    audit.record(admin_id, "refund.failed", "refund", refund.id, {"error": error})
    db.session.commit()
    return RefundResult(refund, "failed", f"Stripe refused the refund: {error}")


def _settle(refund_id: int, admin_id: int | None, stripe_refund: dict) -> RefundResult:
    order = lock_order(db.session.get(Refund, refund_id).order_id)
    refund = _lock_refund(refund_id)
    refund.stripe_refund_id = refund.stripe_refund_id or stripe_refund.get("id")
    status = stripe_refund.get("status")
    if status == "succeeded":
        apply_refund_succeeded(order, refund)
    elif status in ("failed", "canceled"):
        apply_refund_failed(order, refund, stripe_refund.get("failure_reason") or status)
    # "pending" or "requires_action": Stripe finishes it later and tells us by webhook.
    audit.record(
        admin_id,
        f"refund.{refund.status}",
        "refund",
        refund.id,
        {
            "order_id": order.id,
            "stripe_refund_id": refund.stripe_refund_id,
            "amount_cents": refund.amount_cents,
            "credits_clawed_back": refund.credits_clawed_back,
        },
    )
    db.session.commit()
    messages = {
        "succeeded": f"Refunded {format_cents(refund.amount_cents)}; "
        f"{refund.credits_clawed_back} credits clawed back.",
        "failed": f"The refund failed: {refund.failure_reason}",
        "pending": "Stripe accepted the refund and will confirm it shortly.",
    }
    return RefundResult(refund, refund.status, messages[refund.status])


def refund_in_transaction(order: Order, *, key: str, note: str) -> Refund:
    """Refund what remains of a locked order now, inside the caller's transaction.

    For refunds the site decides on its own (a duplicate subscription) while a
    webhook holds the order: the fixed idempotency key makes a retry after a
    rollback get Stripe's first answer, so the money goes back once.
    """
    refund = Refund(
        order_id=order.id,
        sequence=_next_sequence(order.id),
        amount_cents=order.refundable_cents,
        reason="duplicate",
        note=note,
        status="pending",
    )
    db.session.add(refund)
    db.session.flush()
    params = {
        "amount": refund.amount_cents,
        "reason": "duplicate",
        "metadata": {"order_id": str(order.id), "refund_id": str(refund.id)},
    }
    if order.payment_intent_id:
        params["payment_intent"] = order.payment_intent_id
    else:
        params["charge"] = order.charge_id
    stripe_refund = current_gateway().create_refund(params, idempotency_key=key)
    refund.stripe_refund_id = stripe_refund.get("id")
    if stripe_refund.get("status") == "succeeded":
        apply_refund_succeeded(order, refund)
    return refund


# --- applying refunds (shared by the admin's path and the webhook) ----------------


def apply_refund_succeeded(
    order: Order, refund: Refund, *, stripe_event_id: str | None = None
) -> str:
    """Count a refund as done, once: money applied, credits clawed back (order locked)."""
    if refund.status == "succeeded":
        return "noop: refund already applied"
    refund.status = "succeeded"
    refund.failure_reason = None
    order.amount_refunded_cents = min(
        order.amount_cents, order.amount_refunded_cents + refund.amount_cents
    )
    refund.credits_clawed_back = _claw_back_refunded_share(
        order, reference=f"refund:{refund.id}", stripe_event_id=stripe_event_id
    )
    _update_status(order)
    notify.refund_settled(order, refund)  # logged, counted, the customer emailed after commit
    return "refund applied"


def apply_refund_failed(
    order: Order, refund: Refund, reason: str, *, stripe_event_id: str | None = None
) -> str:
    """A refund that failed: if it had been applied, its money and credits come back once."""
    if refund.status == "failed":
        return "noop: refund already failed"
    if refund.status == "succeeded":
        order.amount_refunded_cents = max(0, order.amount_refunded_cents - refund.amount_cents)
        if refund.credits_clawed_back:
            credits.grant(
                order.user_id,
                refund.credits_clawed_back,
                source="refund_reversal",
                source_ref=f"refund:{refund.id}",
                expires_at=pack_lot_expiry(order),
                kind="restore",
                order_id=order.id,
                stripe_event_id=stripe_event_id,
                reference=f"refund:{refund.id}",
                note="the refund failed; credits given back",
            )
            order.credits_clawed_back -= refund.credits_clawed_back
        _update_status(order)
    refund.status = "failed"
    refund.failure_reason = reason
    notify.refund_settled(order, refund)
    return "refund failed"


def apply_charge_refunded(charge: dict, *, stripe_event_id: str | None = None) -> str:
    """Bring the order up to the charge's cumulative `amount_refunded`, once.

    Only the difference from what the site already applied counts, so repeated
    or late deliveries change nothing. The difference settles pending refunds
    first (a refund whose Stripe answer was lost); what remains was refunded
    outside the site (the Stripe dashboard) and is recorded as such.
    """
    order = lock_order_for_payment(charge.get("payment_intent"), charge.get("id"))
    if order is None:
        return "unknown_order"
    order.charge_id = order.charge_id or charge.get("id")
    order.receipt_url = order.receipt_url or charge.get("receipt_url")
    gap = min(int(charge.get("amount_refunded") or 0), order.amount_cents)
    gap -= order.amount_refunded_cents
    if gap <= 0:
        return "noop: already applied"
    for refund in _pending_refunds(order.id):
        if refund.amount_cents <= gap:
            apply_refund_succeeded(order, refund, stripe_event_id=stripe_event_id)
            gap -= refund.amount_cents
    if gap > 0:
        outside = _outside_refund(order, gap, stripe_refund_id=None)
        apply_refund_succeeded(order, outside, stripe_event_id=stripe_event_id)
    return f"applied: {order.amount_refunded_cents} of {order.amount_cents} refunded"


def apply_refund_object(obj: dict, *, stripe_event_id: str | None = None) -> str:
    """Apply a Stripe refund object (refund.created/updated/failed) to its Refund row."""
    order = lock_order_for_payment(obj.get("payment_intent"), obj.get("charge"))
    if order is None:
        return "unknown_order"
    status = obj.get("status")
    refund = _match_refund(order, obj)
    if refund is None:
        if status not in ("succeeded", "pending"):
            return f"noop: unknown refund {status}"
        refund = _outside_refund(order, int(obj.get("amount") or 0), obj.get("id"))
    refund.stripe_refund_id = refund.stripe_refund_id or obj.get("id")
    if status == "succeeded":
        return apply_refund_succeeded(order, refund, stripe_event_id=stripe_event_id)
    if status in ("failed", "canceled"):
        reason = obj.get("failure_reason") or status
        return apply_refund_failed(order, refund, reason, stripe_event_id=stripe_event_id)
    return f"noop: refund {status}"


# --- locking and finding --------------------------------------------------------------


def lock_order(order_id: int) -> Order:
    statement = (
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one()


def lock_order_for_payment(payment_intent, charge_id) -> Order | None:
    """The order paid by this payment intent or charge, locked; None if not ours."""
    payment_intent = stripe_id(payment_intent)
    charge_id = stripe_id(charge_id)
    conditions = []
    if payment_intent:
        conditions.append(Order.payment_intent_id == payment_intent)
    if charge_id:
        conditions.append(Order.charge_id == charge_id)
    if not conditions:
        return None
    statement = (
        select(Order)
        .where(or_(*conditions))
        .order_by(Order.id)
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one_or_none()


def _lock_refund(refund_id: int) -> Refund:
    statement = (
        select(Refund)
        .where(Refund.id == refund_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one()


def _refund_for_token(token: str) -> Refund | None:
    return db.session.scalar(select(Refund).where(Refund.request_token == token))


def _next_sequence(order_id: int) -> int:
    highest = db.session.scalar(
        select(func.coalesce(func.max(Refund.sequence), 0)).where(Refund.order_id == order_id)
    )
    return highest + 1


def _pending_refunds(order_id: int) -> list[Refund]:
    statement = (
        select(Refund)
        .where(Refund.order_id == order_id, Refund.status == "pending")
        .order_by(Refund.sequence)
        .with_for_update()
    )
    return list(db.session.execute(statement).scalars())


def _match_refund(order: Order, obj: dict) -> Refund | None:
    """Our row for a Stripe refund: by its id, by the id we put in its metadata,
    or a refund recorded from `charge.refunded` before its id was known."""
    refund = db.session.scalar(select(Refund).where(Refund.stripe_refund_id == obj.get("id")))
    if refund is not None:
        return refund
    ours = str((obj.get("metadata") or {}).get("refund_id") or "")
    if ours.isdigit():
        refund = db.session.get(Refund, int(ours))
        if refund is not None and refund.order_id == order.id:
            return refund
    return db.session.scalar(
        select(Refund)
        .where(
            Refund.order_id == order.id,
            Refund.stripe_refund_id.is_(None),
            Refund.request_token.is_(None),
            Refund.amount_cents == int(obj.get("amount") or 0),
        )
        .order_by(Refund.sequence)
        .limit(1)
    )


def _outside_refund(order: Order, amount_cents: int, stripe_refund_id: str | None) -> Refund:
    """Record a refund made outside the site (the Stripe dashboard), pending until applied."""
    refund = Refund(
        order_id=order.id,
        sequence=_next_sequence(order.id),
        stripe_refund_id=stripe_refund_id,
        amount_cents=amount_cents,
        note="Refunded outside the site (Stripe dashboard)",
        status="pending",
    )
    db.session.add(refund)
    db.session.flush()
    return refund


def _claw_back_refunded_share(order: Order, *, reference: str, stripe_event_id: str | None) -> int:
    taken = credits_to_claw_back(
        clawable_credits(order),
        order.amount_cents,
        order.amount_refunded_cents,
        order.credits_clawed_back,
    )
    if taken:
        credits.claw_back(
            order.user_id,
            taken,
            reference=reference,
            order_id=order.id,
            stripe_event_id=stripe_event_id,
            note=f"refund of order {order.id}",
        )
        order.credits_clawed_back += taken
    return taken


def _update_status(order: Order) -> None:
    # An open dispute outranks refunds; closing it recomputes the status. A payment
    # under review stays so until it is refunded in full.
    status = settled_status(order.amount_cents, order.amount_refunded_cents)
    if order.status == "needs_review" and status != "refunded":
        return
    if order.status != "disputed":
        order.status = status


def pack_lot_expiry(order: Order):
    """When the order's pack credits expire (credits given back keep that expiry)."""
    lot = db.session.scalar(
        select(CreditLot).where(CreditLot.source == "pack", CreditLot.source_ref == str(order.id))
    )
    return lot.expires_at if lot is not None else None
