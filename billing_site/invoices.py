"""Every paid Stripe invoice of a subscription becomes one payment record (an Order).

* `subscription_create` (the first invoice) is attached to the Checkout order it
  paid for, found by the order id in the subscription's metadata, whichever of
  invoice.paid and checkout.session.completed comes first: one record.
* `subscription_cycle` (a renewal) and `subscription_update` (a plan change's
  proration) create an order of kind "renewal" / "proration", once per invoice
  id (unique, ON CONFLICT DO NOTHING), however often and in whatever order the
  events come.

Nothing here commits; the webhook commits once per event.
"""

from sqlalchemy import select

from billing_site import books
from billing_site.catalog import current_catalog
from billing_site.extensions import db, dialect_insert
from billing_site.models import Order, Subscription
from billing_site.stripe_gateway import stripe_id

PROPER_KINDS = {"subscription_cycle": "renewal", "subscription_update": "proration"}
DUPLICATE_SUBSCRIPTION = "duplicate subscription"


def book_invoice(invoice: dict, row: Subscription) -> tuple[Order, str]:
    """The order for this paid invoice, created or completed once; and what happened."""
    first = invoice.get("billing_reason") == "subscription_create"
    order = _lock_by_invoice(invoice["id"])
    if order is None and first:
        order = _lock_first_order(invoice, row)
    if order is not None and first and order.kind == "subscription":
        # However often it comes, and before or after its Checkout Session.
        return order, _attach_first_invoice(order, invoice, row)
    if order is not None:
        _copy_invoice_ids(order, invoice)
        return order, f"noop: invoice already booked as order {order.id}"
    return _insert_invoice_order(invoice, row)


def grants_allowance(order: Order) -> bool:
    """Whether this payment brings the period's monthly credits (a first payment or a
    renewal that is what was expected; a proration's credits follow the plan change)."""
    return (
        order.kind in ("subscription", "renewal")
        and order.status in ("paid", "partially_refunded")
        and order.failure_reason != DUPLICATE_SUBSCRIPTION
    )


def describe(order: Order) -> str:
    """What the payment was for, as the customer reads it: "Basic — renewal, 1–31 Jan"."""
    catalog = current_catalog()
    if order.kind == "pack":
        pack = catalog.pack(order.item_id)
        return pack.name if pack else f"{order.item_id.title()} Pack"
    tier = catalog.tier(order.item_id)
    name = tier.name if tier else order.item_id.title()
    label = {"subscription": "first month", "renewal": "renewal", "proration": "plan change"}
    text = f"{name} — {label.get(order.kind, order.kind)}"
    if order.period_start and order.period_end:
        text += f", {_period_text(order.period_start, order.period_end)}"
    return text


# --- the first invoice --------------------------------------------------------------------


def _lock_first_order(invoice: dict, row: Subscription) -> Order | None:
    """The Checkout order this subscription was bought with (metadata order id, else by id)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    order_id = str((details.get("metadata") or {}).get("order_id") or "")
    statement = select(Order).where(Order.kind == "subscription", Order.user_id == row.user_id)
    if order_id.isdigit() and len(order_id) < 19:
        statement = statement.where(Order.id == int(order_id))
    else:
        statement = statement.where(Order.stripe_subscription_id == row.stripe_subscription_id)
    order = db.session.execute(
        statement.with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if order is None or order.stripe_invoice_id not in (None, invoice["id"]):
        return None
    return order


def _attach_first_invoice(order: Order, invoice: dict, row: Subscription) -> str:
    from billing_site import fulfilment
    from billing_site.subscriptions import keep_one_live_subscription

    order.stripe_invoice_id = invoice["id"]
    order.stripe_subscription_id = order.stripe_subscription_id or row.stripe_subscription_id
    _copy_invoice_ids(order, invoice)
    if order.status not in fulfilment.FULFILLABLE_STATUSES:
        # The Checkout Session came first and booked it; a duplicate may be refundable now.
        keep_one_live_subscription(order)
        return f"attached to order {order.id}"
    totals = books.invoice_totals(invoice)
    problem = books.mismatch(order.expected_amount_cents, order.currency, totals)
    books.record_totals(order, totals)
    if problem:
        books.mark_needs_review(order, problem)
        return f"needs_review: {problem}"
    fulfilment.mark_paid(order, books.invoice_paid_at(invoice))
    keep_one_live_subscription(order)
    return f"booked as order {order.id}"


# --- renewals and prorations ----------------------------------------------------------------


def _insert_invoice_order(invoice: dict, row: Subscription) -> tuple[Order, str]:
    kind = PROPER_KINDS.get(invoice.get("billing_reason"), "renewal")
    if invoice.get("billing_reason") == "subscription_create":
        kind = "subscription"  # bought outside our Checkout (the dashboard, the API)
    tier = current_catalog().tier(row.tier)
    totals = books.invoice_totals(invoice)
    # A proration's amount is Stripe's to compute; only its currency is checked.
    expected = totals.total if kind == "proration" or tier is None else tier.price_cents
    currency = current_catalog().currency
    problem = books.mismatch(expected, currency, totals)
    period_start, period_end = _line_period(invoice)
    values = {
        "user_id": row.user_id,
        "kind": kind,
        "item_id": row.tier,
        "amount_cents": totals.total,
        "expected_amount_cents": expected,
        "currency": totals.currency[:3] or currency,
        "credits": tier.credits_per_month if tier is not None and kind != "proration" else 0,
        "status": "paid",
        "paid_at": books.invoice_paid_at(invoice) or _now(),
        "stripe_invoice_id": invoice["id"],
        "stripe_subscription_id": row.stripe_subscription_id,
        "period_start": period_start,
        "period_end": period_end,
    }
    inserted = db.session.execute(
        dialect_insert(Order)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["stripe_invoice_id"])
        .returning(Order.id)
    ).scalar_one_or_none()
    order = _lock_by_invoice(invoice["id"])
    if inserted is None:
        return order, f"noop: invoice already booked as order {order.id}"
    books.record_totals(order, totals)
    _copy_invoice_ids(order, invoice)
    order.description = describe(order)
    if problem:
        books.mark_needs_review(order, problem)
        return order, f"needs_review: {problem}"
    return order, f"booked {kind} as order {order.id}"


# --- shared -----------------------------------------------------------------------------


def _copy_invoice_ids(order: Order, invoice: dict) -> None:
    invoice = _with_payments(invoice, order)
    order.payment_intent_id = order.payment_intent_id or books.invoice_payment_intent(invoice)
    order.charge_id = order.charge_id or books.invoice_charge(invoice)
    order.stripe_customer_id = order.stripe_customer_id or stripe_id(invoice.get("customer"))
    order.hosted_invoice_url = invoice.get("hosted_invoice_url") or order.hosted_invoice_url
    start, end = _line_period(invoice)
    order.period_start = order.period_start or start
    order.period_end = order.period_end or end
    if order.kind != "pack":
        order.description = describe(order)


def _with_payments(invoice: dict, order: Order) -> dict:
    """The invoice with its payments: Stripe's invoice.paid does not include them, and
    without the payment intent the payment could not be refunded nor its refunds found."""
    if "payments" in invoice or order.payment_intent_id or not invoice.get("amount_paid"):
        return invoice
    from billing_site.stripe_gateway import current_gateway

    # A GatewayError rolls the event back; the worker retries it.
    payments = current_gateway().list_invoice_payments(invoice["id"])
    return {**invoice, "payments": {"data": payments}}


def _lock_by_invoice(invoice_id: str) -> Order | None:
    return db.session.execute(
        select(Order)
        .where(Order.stripe_invoice_id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _line_period(invoice: dict):
    from billing_site.subscriptions import invoice_period

    return invoice_period(invoice)


def _period_text(start, end) -> str:
    from datetime import timedelta

    last = end - timedelta(seconds=1)  # a period ends at the next one's first second
    if (start.year, start.month) == (last.year, last.month):
        return f"{start.day}–{last.day} {last:%b}"
    return f"{start.day} {start:%b} – {last.day} {last:%b}"


def _now():
    from billing_site.models import utcnow

    return utcnow()
