"""Proof the books equal Stripe: Stripe's charges, refunds and disputes beside the site's.

`audit(since)` lists what Stripe holds for the window (paginated list calls; the
local stand-in answers them too) and what the site booked (orders, refunds,
disputes, the credits granted and clawed back), pairs them by Stripe id and
names every difference. A subscription's charges name no invoice (API
2025-03-31 on): the invoices' payments tie each charge to the invoice its
order was booked from, and the invoice's discount is checked against the order's. `compare` is pure: it takes both sides as values, so
each rule is tested without Stripe or a database.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from billing_site.books import invoice_payment_intent, invoice_totals
from billing_site.extensions import db
from billing_site.models import CreditLot, Dispute, Order, Refund
from billing_site.stripe_gateway import current_gateway, stripe_id

# Orders for which Stripe took money (whatever happened to it since).
MONEY_STATUSES = ("paid", "refunded", "partially_refunded", "disputed")


@dataclass(frozen=True)
class Booked:
    """One order as the audit sees it."""

    order_id: int
    kind: str
    status: str
    amount_cents: int
    amount_refunded_cents: int
    charge_id: str | None
    payment_intent_id: str | None
    invoice_id: str | None
    live_credits: int  # credits still spendable from this order's lots
    granted_credits: int
    currency: str = "usd"
    discount_cents: int = 0


@dataclass(frozen=True)
class Difference:
    # unbooked_charge, no_charge, amount, discount, refunded, credits, refund,
    # refund_not_at_stripe, dispute
    kind: str
    stripe_id: str | None
    order_id: int | None
    message: str

    def line(self) -> str:
        order = f" order {self.order_id}" if self.order_id else ""
        return f"DIFF {self.kind:15} {self.stripe_id or '-'}{order}: {self.message}"


@dataclass
class Report:
    since: datetime
    charges: int = 0
    refunds: int = 0
    disputes: int = 0
    orders: int = 0
    matched: int = 0
    differences: list[Difference] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = (
            f"Stripe since {self.since:%Y-%m-%d %H:%M} UTC: {self.charges} charge(s), "
            f"{self.refunds} refund(s), {self.disputes} dispute(s); the site: {self.orders} "
            f"payment(s), {self.matched} matched to a charge."
        )
        tail = f"{len(self.differences)} difference(s)." if self.differences else "No differences."
        return [head, *(d.line() for d in self.differences), tail]


def audit(since: int) -> Report:
    """Compare Stripe's records created since `since` (Unix time) with the books."""
    gateway = current_gateway()
    charges = gateway.list_charges(created_since=since)
    refunds = gateway.list_refunds(created_since=since)
    disputes = gateway.list_disputes(created_since=since)
    invoices = gateway.list_invoices(created_since=since)
    moment = datetime.fromtimestamp(since, UTC)
    report = compare(
        charges,
        refunds,
        disputes,
        booked_orders(moment, charges, invoices),
        booked_refunds(),
        booked_disputes(),
        invoices=invoices,
        since=moment,
    )
    report.since = moment
    return report


# --- the site's side -----------------------------------------------------------------


def booked_orders(since: datetime, charges: list[dict], invoices: list[dict]) -> list[Booked]:
    """Orders paid in the window, and any older order one of these charges or invoices names."""
    charge_ids = [c["id"] for c in charges]
    intent_ids = [i for i in (stripe_id(c.get("payment_intent")) for c in charges) if i]
    in_window = Order.status.in_(MONEY_STATUSES) & (Order.paid_at >= since)
    named = (
        Order.charge_id.in_(charge_ids)
        | Order.payment_intent_id.in_(intent_ids)
        | Order.stripe_invoice_id.in_([i["id"] for i in invoices])
    )
    orders = db.session.scalars(select(Order).where(in_window | named).order_by(Order.id)).all()
    credits = _credits_by_order([o.id for o in orders])
    return [_booked(order, *credits.get(order.id, (0, 0))) for order in orders]


def _booked(order: Order, granted: int, live: int) -> Booked:
    return Booked(
        order_id=order.id,
        kind=order.kind,
        status=order.status,
        amount_cents=order.amount_cents,
        amount_refunded_cents=order.amount_refunded_cents,
        charge_id=order.charge_id,
        payment_intent_id=order.payment_intent_id,
        invoice_id=order.stripe_invoice_id,
        live_credits=live,
        granted_credits=granted,
        currency=order.currency,
        discount_cents=order.amount_discount_cents or 0,
    )


def _credits_by_order(order_ids: list[int]) -> dict[int, tuple[int, int]]:
    rows = db.session.execute(
        select(
            CreditLot.order_id,
            func.sum(CreditLot.credits_granted),
            func.sum(func.greatest(CreditLot.credits_remaining, 0)),
        )
        .where(CreditLot.order_id.in_(order_ids))
        .group_by(CreditLot.order_id)
    ).all()
    return {order_id: (int(granted), int(live)) for order_id, granted, live in rows}


def booked_refunds() -> dict[str, Refund]:
    rows = db.session.scalars(select(Refund).where(Refund.stripe_refund_id.is_not(None))).all()
    return {row.stripe_refund_id: row for row in rows}


def booked_disputes() -> dict[str, Dispute]:
    return {row.stripe_dispute_id: row for row in db.session.scalars(select(Dispute)).all()}


# --- comparing (pure) ------------------------------------------------------------------


def compare(
    charges: list[dict],
    refunds: list[dict],
    disputes: list[dict],
    orders: list[Booked],
    site_refunds: dict[str, Refund],
    site_disputes: dict[str, Dispute],
    *,
    invoices: Sequence[dict] = (),
    since: datetime | None = None,
) -> Report:
    """Every difference between Stripe's records and the books."""
    report = Report(
        since=datetime.now(UTC),
        charges=len(charges),
        refunds=len(refunds),
        disputes=len(disputes),
        orders=len(orders),
    )
    matched = _pair(charges, orders, invoices)
    report.matched = len(matched)
    for charge in charges:
        order = matched.get(charge["id"])
        if order is None:
            if _took_money(charge):
                report.differences.append(_unbooked(charge))
            continue
        report.differences += _charge_differences(charge, order)
    paired = {order.order_id for order in matched.values()}
    for order in orders:
        if order.order_id not in paired and order.status in MONEY_STATUSES and order.amount_cents:
            report.differences.append(
                Difference(
                    "no_charge",
                    order.charge_id or order.payment_intent_id or order.invoice_id,
                    order.order_id,
                    f"booked as {order.status} {order.amount_cents} but Stripe has no charge for it",
                )
            )
    report.differences += _discount_differences(invoices, orders)
    report.differences += _refund_differences(refunds, site_refunds)
    if since is not None:
        report.differences += _refunds_stripe_never_made(refunds, site_refunds, since)
    report.differences += _dispute_differences(disputes, site_disputes)
    return report


def _pair(
    charges: list[dict], orders: list[Booked], invoices: Sequence[dict] = ()
) -> dict[str, Booked]:
    """Charge id → its order: by charge, payment intent, invoice, then the order in its metadata."""
    # A subscription's charge is tied to its invoice only by the invoice's payments.
    invoice_of_intent = {invoice_payment_intent(i): i["id"] for i in invoices}
    by_charge = {o.charge_id: o for o in orders if o.charge_id}
    by_intent = {o.payment_intent_id: o for o in orders if o.payment_intent_id}
    by_invoice = {o.invoice_id: o for o in orders if o.invoice_id}
    # An order with no Stripe payment id yet (a subscription's first payment booked
    # from its Checkout Session) is claimed by the first charge naming it.
    unlinked = {
        o.order_id: o for o in orders if not (o.charge_id or o.payment_intent_id or o.invoice_id)
    }
    pairs: dict[str, Booked] = {}
    for charge in sorted(charges, key=lambda c: c.get("created") or 0):
        metadata = charge.get("metadata") or {}
        intent = stripe_id(charge.get("payment_intent"))
        invoice = invoice_of_intent.get(intent) if intent else None
        invoice = invoice or stripe_id(charge.get("invoice"))  # API versions before 2025-03-31
        order = (
            by_charge.get(charge["id"])
            or by_intent.get(stripe_id(charge.get("payment_intent")) or "")
            or by_invoice.get(invoice or "")
        )
        if order is None and str(metadata.get("order_id") or "").isdigit():
            order = unlinked.pop(int(metadata["order_id"]), None)
        if order is not None:
            pairs[charge["id"]] = order
    return pairs


def _took_money(charge: dict) -> bool:
    return bool(charge.get("paid")) and charge.get("status") == "succeeded" and charge["amount"] > 0


def _unbooked(charge: dict) -> Difference:
    return Difference(
        "unbooked_charge",
        charge["id"],
        None,
        f"Stripe took {charge['amount']} {charge.get('currency')} the site never booked",
    )


def _charge_differences(charge: dict, order: Booked) -> list[Difference]:
    found = []

    def differ(kind: str, message: str) -> None:
        found.append(Difference(kind, charge["id"], order.order_id, message))

    if not _took_money(charge):
        if order.status in MONEY_STATUSES:
            differ("unpaid", f"booked as {order.status} but the charge is {charge.get('status')}")
    elif order.amount_cents != charge["amount"]:
        differ("amount", f"booked {order.amount_cents}, Stripe took {charge['amount']}")
    elif order.currency.lower() != (charge.get("currency") or "").lower():
        differ("amount", f"booked in {order.currency}, Stripe took {charge.get('currency')}")
    refunded = int(charge.get("amount_refunded") or 0)
    if order.amount_refunded_cents != refunded:
        differ("refunded", f"booked {order.amount_refunded_cents} refunded, Stripe {refunded}")
    fully_refunded = _took_money(charge) and refunded >= charge["amount"]
    if order.live_credits > 0 and (fully_refunded or not _took_money(charge)):
        why = "refunded" if fully_refunded else "unpaid"
        differ("credits", f"{order.live_credits} credit(s) still live for a {why} charge")
    return found


def _discount_differences(invoices: Sequence[dict], orders: list[Booked]) -> list[Difference]:
    """A discount booked on an invoice's order that is not the invoice's own (TEST50, FREE100)."""
    by_invoice = {o.invoice_id: o for o in orders if o.invoice_id}
    found = []
    for invoice in invoices:
        order = by_invoice.get(invoice["id"])
        discount = invoice_totals(invoice).discount
        if (
            order is not None
            and invoice.get("status") == "paid"
            and order.discount_cents != discount
        ):
            message = f"booked a discount of {order.discount_cents}, Stripe's is {discount}"
            found.append(Difference("discount", invoice["id"], order.order_id, message))
    return found


def _refund_differences(refunds: list[dict], booked: dict[str, Refund]) -> list[Difference]:
    found = []
    for refund in refunds:
        if refund.get("status") != "succeeded":
            continue
        row = booked.get(refund["id"])
        if row is None:
            message = f"Stripe refunded {refund['amount']} of {stripe_id(refund.get('charge'))}"
            found.append(Difference("refund", refund["id"], None, message + "; not booked"))
        elif row.amount_cents != refund["amount"] or row.status != "succeeded":
            message = f"booked {row.status} {row.amount_cents}, Stripe succeeded {refund['amount']}"
            found.append(Difference("refund", refund["id"], row.order_id, message))
    return found


# A booked refund is written before Stripe is asked, so Stripe's own record of it is
# a little younger: the window's first minutes are left to the previous audit.
REFUND_WINDOW_MARGIN = timedelta(minutes=5)


def _refunds_stripe_never_made(
    refunds: list[dict], booked: dict[str, Refund], since: datetime
) -> list[Difference]:
    """Refunds the books say succeeded in the window that Stripe has no record of."""
    at_stripe = {refund["id"] for refund in refunds}
    start = since + REFUND_WINDOW_MARGIN
    return [
        Difference(
            "refund_not_at_stripe",
            refund_id,
            row.order_id,
            f"booked a refund of {row.amount_cents} that Stripe never made",
        )
        for refund_id, row in booked.items()
        if row.status == "succeeded" and row.created_at >= start and refund_id not in at_stripe
    ]


def _dispute_differences(disputes: list[dict], booked: dict[str, Dispute]) -> list[Difference]:
    found = []
    for dispute in disputes:
        row = booked.get(dispute["id"])
        if row is None:
            message = f"{dispute.get('status')} dispute of {stripe_id(dispute.get('charge'))}"
            found.append(Difference("dispute", dispute["id"], None, message + "; not booked"))
        elif row.status != dispute.get("status") or row.amount_cents != dispute["amount"]:
            message = (
                f"booked {row.status} {row.amount_cents}, "
                f"Stripe {dispute.get('status')} {dispute['amount']}"
            )
            found.append(Difference("dispute", dispute["id"], row.order_id, message))
    return found
