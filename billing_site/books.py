"""What Stripe actually took, read off a Checkout Session or an invoice, and whether
it is what the payment record expected ("paid means paid").

Pure reading and checking; nothing here writes to the database except
`record_totals`, which copies Stripe's figures onto an order (no flush, no commit).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from billing_site.models import Order
from billing_site.stripe_gateway import stripe_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Totals:
    """Stripe's figures for one payment, in the currency's minor units."""

    total: int
    subtotal: int
    discount: int
    tax: int  # all tax Stripe reports
    added_tax: int  # the part added on top of the subtotal (exclusive tax)
    currency: str
    promotion_code: str | None = None


def session_totals(session: dict) -> Totals:
    """A Checkout Session's amount_total, subtotal, discount, tax and promotion code."""
    details = session.get("total_details") or {}
    total = _int(session.get("amount_total"))
    subtotal = _int(session.get("amount_subtotal"), default=total)
    discount = _int(details.get("amount_discount"))
    tax = _int(details.get("amount_tax"))
    # amount_tax sums all tax; only what the subtotal does not hold is added on top.
    added_tax = min(max(total - (subtotal - discount), 0), tax)
    codes = [stripe_id(d.get("promotion_code")) for d in session.get("discounts") or [] if d]
    return Totals(
        total=total,
        subtotal=subtotal,
        discount=discount,
        tax=tax,
        added_tax=added_tax,
        currency=(session.get("currency") or "").lower(),
        promotion_code=next(filter(None, codes), None),
    )


def invoice_totals(invoice: dict) -> Totals:
    """An invoice's total, subtotal, discounts (total_discount_amounts) and exclusive tax."""
    total = _int(invoice.get("total", invoice.get("amount_paid")))
    discount = sum(_int(d.get("amount")) for d in invoice.get("total_discount_amounts") or [])
    taxes = [t for t in invoice.get("total_taxes") or [] if isinstance(t, dict)]
    tax = sum(_int(t.get("amount")) for t in taxes)
    added_tax = sum(
        _int(t.get("amount")) for t in taxes if t.get("tax_behavior", "exclusive") == "exclusive"
    )
    codes = [
        stripe_id(d.get("promotion_code"))
        for d in invoice.get("discounts") or []
        if isinstance(d, dict)
    ]
    return Totals(
        total=total,
        subtotal=_int(invoice.get("subtotal"), default=total),
        discount=discount,
        tax=tax,
        added_tax=added_tax,
        currency=(invoice.get("currency") or "").lower(),
        promotion_code=next(filter(None, codes), None),
    )


def mismatch(expected_cents: int, expected_currency: str, totals: Totals) -> str | None:
    """Why Stripe's totals are not the expected payment, or None when they are.

    The total (less any tax on top) must be the expected amount, or be explained
    by a discount: the subtotal is the expected amount and subtotal − discount is
    what was taken. A 100% code (total 0) passes the same way.
    """
    if totals.currency != expected_currency.lower():
        return f"currency {totals.currency or 'none'} instead of {expected_currency.lower()}"
    taken = totals.total - totals.added_tax
    if taken == expected_cents and totals.discount == 0:
        return None
    if totals.subtotal == expected_cents and taken == totals.subtotal - totals.discount:
        return None
    return (
        f"amount {totals.total} (subtotal {totals.subtotal}, discount {totals.discount}) "
        f"instead of {expected_cents}"
    )


def record_totals(order: Order, totals: Totals) -> None:
    """Book what Stripe took: from here on amount_cents is the charged amount."""
    order.amount_cents = totals.total
    order.amount_subtotal_cents = totals.subtotal
    order.amount_discount_cents = totals.discount
    order.amount_tax_cents = totals.tax
    order.currency = totals.currency[:3] or order.currency
    order.promotion_code = totals.promotion_code or order.promotion_code


def mark_needs_review(order: Order, reason: str) -> None:
    """Nothing is granted; the admin overview lists the order."""
    order.status = "needs_review"
    order.failure_reason = f"Stripe reported {reason}; nothing was granted."
    log.warning("order %s needs review: Stripe reported %s", order.id, reason)


# --- invoices ---------------------------------------------------------------------------


def invoice_payment_intent(invoice: dict) -> str | None:
    """The payment intent that paid the invoice (API 2026-07-29: invoice.payments)."""
    for payment in (invoice.get("payments") or {}).get("data") or []:
        inner = (payment or {}).get("payment") or {}
        if inner.get("payment_intent"):
            return stripe_id(inner["payment_intent"])
    return stripe_id(invoice.get("payment_intent"))


def invoice_charge(invoice: dict) -> str | None:
    for payment in (invoice.get("payments") or {}).get("data") or []:
        inner = (payment or {}).get("payment") or {}
        if inner.get("charge"):
            return stripe_id(inner["charge"])
    return stripe_id(invoice.get("charge"))


def invoice_paid_at(invoice: dict) -> datetime | None:
    paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
    return datetime.fromtimestamp(int(paid_at), UTC) if paid_at else None


def _int(value, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


# --- how a payment reads -------------------------------------------------------------------

CUSTOMER_STATUS = {
    "paid": "Paid",
    "refunded": "Refunded",
    "partially_refunded": "Partially refunded",
    "disputed": "Disputed",
    "failed": "Failed",
    "needs_review": "Needs review",
    "expired": "Expired",
    "pending": "Pending",
}


def money_text(cents: int, currency: str) -> str:
    """ "$20.00" for dollars; "2,000 JPY" or "20.00 EUR" for other currencies."""
    from billing_site.admin.order_export import major_units

    if (currency or "usd").lower() == "usd":
        sign = "-" if cents < 0 else ""
        return f"{sign}${abs(cents) / 100:,.2f}"
    return f"{major_units(cents, currency)} {currency.upper()}"


def payment_label(order: Order) -> str:
    """What the payment was for, in the customer's words."""
    from billing_site.invoices import describe

    return describe(order)
